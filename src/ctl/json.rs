//! JSON exactly as Go's `encoding/json` writes etcd's structs (what `etcdctl -w json` prints):
//! fields in declaration order, `omitempty` fields left out when zero, bytes as standard
//! base64, and Go's string escaping (`<`, `>`, `&` as `\u003c`...).

use base64::Engine;

/// Writes one JSON value into a string.
pub struct Json {
    out: String,
    /// Whether the innermost open object or array has an element yet.
    first: Vec<bool>,
}

impl Default for Json {
    fn default() -> Self {
        Json::new()
    }
}

impl Json {
    pub fn new() -> Json {
        Json {
            out: String::with_capacity(256),
            first: Vec::new(),
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn sep(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(',');
            }
            *first = false;
        }
    }

    fn key(&mut self, name: &str) {
        self.sep();
        push_str(&mut self.out, name);
        self.out.push(':');
    }

    /// Opens an object (as an array element or the top value).
    pub fn begin_obj(&mut self) {
        self.sep();
        self.out.push('{');
        self.first.push(true);
    }

    pub fn obj(&mut self, name: &str) {
        self.key(name);
        self.out.push('{');
        self.first.push(true);
    }

    pub fn end_obj(&mut self) {
        self.first.pop();
        self.out.push('}');
    }

    pub fn begin_arr(&mut self) {
        self.sep();
        self.out.push('[');
        self.first.push(true);
    }

    pub fn arr(&mut self, name: &str) {
        self.key(name);
        self.out.push('[');
        self.first.push(true);
    }

    pub fn end_arr(&mut self) {
        self.first.pop();
        self.out.push(']');
    }

    pub fn null(&mut self, name: &str) {
        self.key(name);
        self.out.push_str("null");
    }

    pub fn int(&mut self, name: &str, v: impl Into<i128>) {
        self.key(name);
        self.out.push_str(&v.into().to_string());
    }

    /// An `omitempty` integer.
    pub fn int_oe(&mut self, name: &str, v: impl Into<i128>) {
        let v = v.into();
        if v != 0 {
            self.int(name, v);
        }
    }

    pub fn bool(&mut self, name: &str, v: bool) {
        self.key(name);
        self.out.push_str(if v { "true" } else { "false" });
    }

    pub fn bool_oe(&mut self, name: &str, v: bool) {
        if v {
            self.bool(name, v);
        }
    }

    pub fn str(&mut self, name: &str, v: &str) {
        self.key(name);
        push_str(&mut self.out, v);
    }

    pub fn str_oe(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.str(name, v);
        }
    }

    /// A string element of an array.
    pub fn elem_str(&mut self, v: &str) {
        self.sep();
        push_str(&mut self.out, v);
    }

    /// A `[]byte` element of an array (base64).
    pub fn elem_bytes(&mut self, v: &[u8]) {
        self.sep();
        push_base64(&mut self.out, v);
    }

    /// An `omitempty` `[]byte` (base64).
    pub fn bytes_oe(&mut self, name: &str, v: &[u8]) {
        if !v.is_empty() {
            self.key(name);
            push_base64(&mut self.out, v);
        }
    }

    /// An `omitempty` `[]string`.
    pub fn strs_oe(&mut self, name: &str, v: &[String]) {
        if !v.is_empty() {
            self.arr(name);
            for s in v {
                self.elem_str(s);
            }
            self.end_arr();
        }
    }
}

fn push_base64(out: &mut String, v: &[u8]) {
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(v, out);
    out.push('"');
}

/// A JSON string as Go 1.19's encoder escapes it.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_like_go() {
        let mut j = Json::new();
        j.begin_obj();
        j.obj("header");
        j.int_oe("cluster_id", 7u64);
        j.int_oe("revision", 0i64);
        j.end_obj();
        j.arr("kvs");
        j.begin_obj();
        j.bytes_oe("key", b"foo");
        j.end_obj();
        j.end_arr();
        j.str("s", "<a&b>\u{1}");
        j.end_obj();
        assert_eq!(
            j.finish(),
            r#"{"header":{"cluster_id":7},"kvs":[{"key":"Zm9v"}],"s":"\u003ca\u0026b\u003e\u0001"}"#
        );
    }
}
