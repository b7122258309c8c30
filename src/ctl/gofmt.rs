//! Go's formatting and parsing conventions that etcdctl's output and input follow: `%q`
//! quoting, `strconv.ParseInt` and its errors, `time.Duration` strings, go-humanize byte sizes,
//! and etcdctl's `argify` word splitting.

use std::time::Duration;

/// Go's `strconv.Quote` of bytes: `"..."` with Go escapes; invalid UTF-8 as `\x..`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                let (v, b) = rest.split_at(e.valid_up_to());
                (std::str::from_utf8(v).expect("checked valid"), b)
            }
        };
        for c in valid.chars() {
            quote_char(&mut out, c);
        }
        if let Some((first, tail)) = bad.split_first() {
            out.push_str(&format!("\\x{first:02x}"));
            rest = tail;
        } else {
            rest = &[];
        }
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        '"' => out.push_str("\\\""),
        c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() || c == '\u{feff}' => {
            if (c as u32) < 0x10000 {
                out.push_str(&format!("\\u{:04x}", c as u32))
            } else {
                out.push_str(&format!("\\U{:08x}", c as u32))
            }
        }
        c => out.push(c),
    }
}

/// Go's `%q` of a list of strings: `["a" "b"]`.
pub fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_bytes())).collect();
    format!("[{}]", quoted.join(" "))
}

/// Reads a Go string literal (`"..."` with escapes, or a raw `` `...` ``) from the start of `s`
/// (after leading spaces), as `fmt.Sscanf("%q")` does. Returns the value and the rest of `s`.
pub fn scan_quoted(s: &str) -> Option<(Vec<u8>, &str)> {
    let s = s.trim_start_matches([' ', '\t', '\r']);
    let mut chars = s.char_indices();
    let (_, open) = chars.next()?;
    if open == '`' {
        let end = s[1..].find('`')? + 1;
        return Some((s.as_bytes()[1..end].to_vec(), &s[end + 1..]));
    }
    if open != '"' {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((out, &s[i + 1..])),
            b'\n' => return None,
            b'\\' => {
                let (bytes, used) = unescape(&s[i + 1..])?;
                out.extend_from_slice(&bytes);
                i += 1 + used;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// One escape after a backslash in a double-quoted Go string: (bytes, length consumed).
fn unescape(s: &str) -> Option<(Vec<u8>, usize)> {
    let b = s.as_bytes();
    let simple = |c: u8| Some((vec![c], 1));
    match *b.first()? {
        b'a' => simple(7),
        b'b' => simple(8),
        b'f' => simple(12),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(11),
        b'\\' => simple(b'\\'),
        b'"' => simple(b'"'),
        b'x' => {
            let v = u8::from_str_radix(s.get(1..3)?, 16).ok()?;
            Some((vec![v], 3))
        }
        b'0'..=b'7' => {
            let v = u16::from_str_radix(s.get(0..3)?, 8).ok()?;
            Some((vec![u8::try_from(v).ok()?], 3))
        }
        b'u' | b'U' => {
            let n = if b[0] == b'u' { 4 } else { 8 };
            let v = u32::from_str_radix(s.get(1..1 + n)?, 16).ok()?;
            let c = char::from_u32(v)?;
            Some((c.to_string().into_bytes(), 1 + n))
        }
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, base, 64)`, with Go's error text.
pub fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    let syntax = || {
        format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            quote(s.as_bytes())
        )
    };
    let range = || {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            quote(s.as_bytes())
        )
    };
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(base)) {
        return Err(syntax());
    }
    let mag = u128::from_str_radix(digits, base).map_err(|_| range())?;
    let v = if neg { -(mag as i128) } else { mag as i128 };
    i64::try_from(v).map_err(|_| range())
}

/// Go's `strconv.ParseUint(s, base, 64)`, with Go's error text.
pub fn parse_uint(s: &str, base: u32) -> Result<u64, String> {
    let msg = |what: &str| format!("strconv.ParseUint: parsing {}: {what}", quote(s.as_bytes()));
    if s.is_empty() || !s.chars().all(|c| c.is_digit(base)) {
        return Err(msg("invalid syntax"));
    }
    u64::from_str_radix(s, base).map_err(|_| msg("value out of range"))
}

/// Go's `%016x` of a signed integer (a minus sign, never two's complement).
pub fn hex16(v: i64) -> String {
    if v < 0 {
        format!("-{:016x}", v.unsigned_abs())
    } else {
        format!("{v:016x}")
    }
}

/// Parses a Go `time.Duration` string: "5s", "500ms", "1m30s", "1.5h", "0".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("time: invalid duration {}", quote(s.as_bytes()));
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(err());
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    quote(s.as_bytes())
                ))
            }
            u => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(u.as_bytes()),
                    quote(s.as_bytes())
                ))
            }
        };
        total += value * nanos;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Go's `time.Duration.String()`: "1.594745ms", "850µs", "2m3.5s", "0s".
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    // Trims trailing zeros of a fraction with `digits` places.
    fn frac(int: u128, rem: u128, digits: u32) -> String {
        let mut s = format!("{int}");
        if rem != 0 {
            let f = format!("{rem:0width$}", width = digits as usize);
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        s
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s = frac(s, sub, 9);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// go-humanize's `Bytes`: SI units, "20 kB", "1.5 MB", "512 B".
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor();
    let suffix = UNITS[e as usize];
    let val = ((n as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// etcdctl's `argify`: splits a line into words, where a word is a double-quoted Go string
/// (unquoted), a single-quoted string (quotes removed), or a run of non-space characters.
pub fn argify(line: &str) -> Result<Vec<String>, String> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let mut out = Vec::new();
    let mut i = 0;
    let b = line.as_bytes();
    while i < b.len() {
        let c = line[i..].chars().next().expect("in bounds");
        if is_space(c) {
            i += c.len_utf8();
            continue;
        }
        if c == '"' {
            // "(?:[^"\\]|\\.)*"
            let mut j = i + 1;
            let mut closed = None;
            while j < b.len() {
                match b[j] {
                    b'\\' if j + 1 < b.len() => j += 2,
                    b'"' => {
                        closed = Some(j);
                        break;
                    }
                    _ => j += 1,
                }
            }
            if let Some(end) = closed {
                let word = &line[i..=end];
                let (v, rest) = scan_quoted(word).ok_or_else(|| "invalid syntax".to_string())?;
                if !rest.is_empty() {
                    return Err("invalid syntax".into());
                }
                out.push(String::from_utf8_lossy(&v).into_owned());
                i = end + 1;
                continue;
            }
            i += 1;
            continue;
        }
        if c == '\'' {
            if let Some(end) = line[i + 1..].find('\'') {
                out.push(line[i + 1..i + 1 + end].to_string());
                i += end + 2;
                continue;
            }
            i += 1;
            continue;
        }
        let end = line[i..].find(is_space).map_or(line.len(), |e| i + e);
        out.push(line[i..end].to_string());
        i = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote(b"a\"b\n\x01\xff"), r#""a\"b\n\x01\xff""#);
        assert_eq!(quote("héllo".as_bytes()), "\"héllo\"");
    }

    #[test]
    fn scans_go_strings() {
        let (v, rest) = scan_quoted(r#" "a\"b\x41\u00e9") > "1""#).unwrap();
        assert_eq!(v, "a\"bAé".as_bytes());
        assert_eq!(rest, r#") > "1""#);
        assert_eq!(scan_quoted("`raw\\n`x").unwrap(), (b"raw\\n".to_vec(), "x"));
        assert!(scan_quoted("\"open").is_none());
    }

    #[test]
    fn parses_ints_like_strconv() {
        assert_eq!(parse_int("ff", 16), Ok(255));
        assert_eq!(parse_int("-5", 10), Ok(-5));
        assert_eq!(
            parse_int("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.into())
        );
        assert_eq!(
            parse_int("99999999999999999999", 10),
            Err(r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#.into())
        );
        assert_eq!(hex16(0x2040a20b5978f10f), "2040a20b5978f10f");
        assert_eq!(hex16(1), "0000000000000001");
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5").is_err());
        assert_eq!(
            format_duration(Duration::from_nanos(1_594_745)),
            "1.594745ms"
        );
        assert_eq!(format_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(format_duration(Duration::from_millis(123_500)), "2m3.5s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_nanos(42)), "42ns");
    }

    #[test]
    fn humanizes_like_go_humanize() {
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(5), "5 B");
        assert_eq!(humanize_bytes(1_500_000), "1.5 MB");
        assert_eq!(humanize_bytes(25_000), "25 kB");
        assert_eq!(humanize_bytes(2_147_483_648), "2.1 GB");
    }

    #[test]
    fn argifies_like_etcdctl() {
        assert_eq!(
            argify(r#"put "a b" 'c d' e\"f"#).unwrap(),
            vec!["put", "a b", "c d", "e\\\"f"]
        );
        assert_eq!(argify("  get   k  ").unwrap(), vec!["get", "k"]);
    }
}
