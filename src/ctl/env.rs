//! `ETCDCTL_*` environment variables, handled as etcdctl's `pkg/flags` does: a variable sets a
//! global flag not given on the command line (an unparsable value is ignored); a variable for a
//! flag that *is* on the command line is a fatal conflict; any other `ETCDCTL_*` variable gets
//! an "unrecognized" warning. Messages use capnslog's format, as etcdctl prints them.

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::gofmt::parse_duration;
use super::Global;

/// etcdctl's global flags (those corekvctl does not implement are accepted and ignored).
const GLOBAL_FLAGS: &[&str] = &[
    "endpoints",
    "debug",
    "write-out",
    "hex",
    "dial-timeout",
    "command-timeout",
    "keepalive-time",
    "keepalive-timeout",
    "insecure-transport",
    "insecure-discovery",
    "insecure-skip-tls-verify",
    "cert",
    "key",
    "cacert",
    "user",
    "password",
    "discovery-srv",
    "discovery-srv-name",
];

/// What the environment said, to report when the command reads its client configuration.
#[derive(Clone, Debug, Default)]
pub struct EnvReport {
    /// capnslog lines for stderr.
    pub lines: Vec<String>,
    /// A conflicting variable: etcdctl exits with status 1 after the lines.
    pub fatal: bool,
}

/// The environment variable for a flag (`dial-timeout` → `ETCDCTL_DIAL_TIMEOUT`).
fn env_name(flag: &str) -> String {
    format!("ETCDCTL_{}", flag.to_uppercase().replace('-', "_"))
}

/// Whether the argument with clap id `id` was given on the command line (at any level).
fn on_command_line(m: &ArgMatches, id: &str) -> bool {
    if m.try_contains_id(id).unwrap_or(false)
        && m.value_source(id) == Some(ValueSource::CommandLine)
    {
        return true;
    }
    m.subcommand()
        .is_some_and(|(_, sub)| on_command_line(sub, id))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A capnslog line: `2006-01-02 15:04:05.000000 L | pkg/flags: msg`, in UTC.
fn capnslog(level: char, msg: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06} {level} | pkg/flags: {msg}\n",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Applies `ETCDCTL_*` variables to `g` and returns what etcdctl would log about them.
/// `watch` also owns `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`.
pub fn apply(g: &mut Global, m: &ArgMatches, watch: bool) -> EnvReport {
    let mut report = EnvReport::default();
    let mut used = Vec::new();
    let mut on_line = Vec::new();
    for flag in GLOBAL_FLAGS {
        let name = env_name(flag);
        let id = flag.replace('-', "_");
        if on_command_line(m, &id) {
            on_line.push(name);
            continue;
        }
        let Ok(val) = std::env::var(&name) else {
            continue;
        };
        if val.is_empty() {
            continue;
        }
        used.push(name);
        match *flag {
            "endpoints" => g.endpoints = val.split(',').map(|s| s.trim().to_string()).collect(),
            "write-out" => g.write_out = val,
            "hex" => g.hex = parse_bool(&val).unwrap_or(g.hex),
            "dial-timeout" => g.dial_timeout = parse_duration(&val).unwrap_or(g.dial_timeout),
            "command-timeout" => {
                g.command_timeout = parse_duration(&val).unwrap_or(g.command_timeout)
            }
            "cert" => g.cert = Some(val.into()),
            "key" => g.key = Some(val.into()),
            "cacert" => g.cacert = Some(val.into()),
            "user" => g.user = val,
            "password" => g.password = val,
            "insecure-transport" => {
                g.insecure_transport = parse_bool(&val).unwrap_or(g.insecure_transport)
            }
            "insecure-skip-tls-verify" => {
                g.insecure_skip_tls_verify = parse_bool(&val).unwrap_or(g.insecure_skip_tls_verify)
            }
            _ => {}
        }
    }
    // etcdctl's main reads and unsets ETCDCTL_API before flags are looked at.
    used.push("ETCDCTL_API".into());
    if watch {
        used.push("ETCDCTL_WATCH_KEY".into());
        used.push("ETCDCTL_WATCH_RANGE_END".into());
    }
    for (k, v) in std::env::vars() {
        if used.contains(&k) {
            continue;
        }
        if on_line.contains(&k) {
            report.lines.push(capnslog(
                'C',
                &format!(
                    "conflicting environment variable {} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                    super::gofmt::quote(k.as_bytes())
                ),
            ));
            report.fatal = true;
            return report;
        }
        if k.starts_with("ETCDCTL_") {
            report.lines.push(capnslog(
                'W',
                &format!("unrecognized environment variable {k}={v}"),
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_timestamps() {
        assert_eq!(env_name("dial-timeout"), "ETCDCTL_DIAL_TIMEOUT");
        let line = capnslog('W', "x");
        assert_eq!(
            line.len(),
            "2006-01-02 15:04:05.000000 W | pkg/flags: x\n".len()
        );
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
