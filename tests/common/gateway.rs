//! etcd's JSON gateway from the outside: a small HTTP/1.1 client over std's TcpStream with
//! keep-alive (one connection per server for all unary calls), Content-Length or chunked
//! request bodies, extra request headers, and `{"result": …}` streams; and a [`Pair`] of
//! etcd 3.4 and corekv, fresh and with the same IDs, that sends both the same request and
//! requires the same answer (status, content type, JSON, [`normalize`]d). Used by
//! tests/gateway.rs and tests/gateway_auth.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::{free_port, Kind, Server};

/// One HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

pub fn connect(port: u16) -> Conn {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // A guard against a hung server only; nothing waits for a timeout to pass.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Conn {
        reader: BufReader::new(s),
    }
}

impl Conn {
    pub fn send(&mut self, method: &str, path: &str, body: &[u8], chunked: bool) {
        self.send_with(method, path, &[], body, chunked)
    }

    /// A request with extra headers (`name`, `value`; sent as given, an empty value too).
    pub fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        chunked: bool,
    ) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if chunked {
            req.push_str("Transfer-Encoding: chunked\r\n\r\n");
        } else {
            req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        }
        let mut bytes = req.into_bytes();
        if chunked {
            // Two chunks, to cross a chunk boundary inside the JSON.
            let (a, b) = body.split_at(body.len() / 2);
            for part in [a, b] {
                if !part.is_empty() {
                    bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    bytes.extend_from_slice(part);
                    bytes.extend_from_slice(b"\r\n");
                }
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        } else {
            bytes.extend_from_slice(body);
        }
        self.reader.get_mut().write_all(&bytes).unwrap();
    }

    /// Reads a response head: status, content type, and whether the body is chunked
    /// (else its length).
    pub fn head(&mut self) -> (u16, String, Option<usize>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut content_type = String::new();
        let mut length = None;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.to_string(),
                "content-length" => length = Some(value.parse().unwrap()),
                _ => {}
            }
        }
        (status, content_type, length)
    }

    /// One chunk of a chunked body (None at its end).
    pub fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        self.reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            // Trailers (etcd's gateway sends gRPC's trailers with errors), then a blank line.
            loop {
                let mut t = String::new();
                self.reader.read_line(&mut t).ok()?;
                if t.trim_end().is_empty() {
                    return None;
                }
            }
        }
        let mut data = vec![0; n + 2];
        self.reader.read_exact(&mut data).ok()?;
        data.truncate(n);
        (n > 0).then_some(data)
    }

    pub fn response(&mut self) -> Response {
        let (status, content_type, length) = self.head();
        let body = match length {
            Some(n) => {
                let mut b = vec![0; n];
                self.reader.read_exact(&mut b).unwrap();
                b
            }
            None => {
                let mut b = Vec::new();
                while let Some(c) = self.chunk() {
                    b.extend_from_slice(&c);
                }
                b
            }
        };
        Response {
            status,
            content_type,
            body,
        }
    }

    pub fn call(&mut self, method: &str, path: &str, body: &[u8], chunked: bool) -> Response {
        self.send(method, path, body, chunked);
        self.response()
    }

    /// A POST with extra headers.
    pub fn post_with(&mut self, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        self.send_with("POST", path, headers, body.as_bytes(), false);
        self.response()
    }
}

/// An open gateway stream: `{"result": …}` lines.
pub struct Stream {
    pub conn: Conn,
    pending: Vec<u8>,
}

impl Stream {
    pub fn open(port: u16, path: &str, body: &str) -> (u16, Stream) {
        Stream::open_with(port, path, &[], body)
    }

    /// A stream whose request has extra headers.
    pub fn open_with(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Stream) {
        let mut conn = connect(port);
        conn.send_with("POST", path, headers, body.as_bytes(), false);
        let (status, _, _) = conn.head();
        (
            status,
            Stream {
                conn,
                pending: Vec::new(),
            },
        )
    }

    /// The next line of the response, as JSON.
    pub fn next(&mut self) -> Value {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let chunk = self.conn.chunk().expect("the stream ended");
            self.pending.extend_from_slice(&chunk);
        }
    }
}

/// etcd 3.4 and corekv, fresh, with the same IDs.
pub struct Pair {
    pub servers: [Server; 2],
    pub conns: [Conn; 2],
}

pub fn pair() -> Pair {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let etcd = Server::start_advertising(Kind::Etcd, &peer);
    let corekv = Server::start_advertising(Kind::Corekv, &peer);
    let conns = [connect(etcd.client_port), connect(corekv.client_port)];
    Pair {
        servers: [etcd, corekv],
        conns,
    }
}

/// etcd's answer (left) and corekv's (right) must have the same status, content type and
/// normalized JSON; returns etcd's, normalized.
pub fn same_answer(what: &str, e: &Response, c: &Response) -> Value {
    let (mut ej, mut cj) = (e.json(), c.json());
    normalize(&mut ej);
    normalize(&mut cj);
    assert_eq!(
        (e.status, &e.content_type, &ej),
        (c.status, &c.content_type, &cj),
        "{what}: etcd (left) and corekv (right) differ"
    );
    ej
}

/// Takes out what legitimately differs between the two servers (and checks the shape of what
/// it takes out of an Authenticate answer: its token).
pub fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in ["raft_term", "clientURLs"] {
                map.remove(key);
            }
            if map.contains_key("dbSize") {
                // Status: the version and storage numbers are each server's own.
                for key in [
                    "version",
                    "dbSize",
                    "dbSizeInUse",
                    "raftIndex",
                    "raftTerm",
                    "raftAppliedIndex",
                ] {
                    assert!(map.remove(key).is_some(), "Status without {key}");
                }
            }
            if let Some(Value::String(t)) = map.get_mut("token") {
                // A simple token: 16 random letters, a dot, and the raft index it was made at
                // (each server's own).
                let ok = t.split_once('.').is_some_and(|(random, index)| {
                    random.len() == 16
                        && random.bytes().all(|b| b.is_ascii_alphabetic())
                        && index.parse::<u64>().is_ok()
                });
                assert!(ok, "not a simple token: {t:?}");
                *t = "<simple token>".into();
            }
            for (_, child) in map.iter_mut() {
                normalize(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

impl Pair {
    pub fn port(&self, i: usize) -> u16 {
        self.servers[i].client_port
    }

    /// The same request to both; returns both responses.
    pub fn raw(&mut self, method: &str, path: &str, body: &str, chunked: bool) -> [Response; 2] {
        let [a, b] = &mut self.conns;
        [
            a.call(method, path, body.as_bytes(), chunked),
            b.call(method, path, body.as_bytes(), chunked),
        ]
    }

    /// The same request to both: same status, content type and (normalized) JSON.
    pub fn same(&mut self, path: &str, body: &str) -> Value {
        self.same_as(path, body, false)
    }

    pub fn same_as(&mut self, path: &str, body: &str, chunked: bool) -> Value {
        let [e, c] = self.raw("POST", path, body, chunked);
        same_answer(&format!("POST {path} {body}"), &e, &c)
    }

    /// The same request to both, each with its own extra headers (its own token): same
    /// status, content type and (normalized) JSON.
    pub fn same_with(&mut self, path: &str, body: &str, headers: [&[(&str, &str)]; 2]) -> Value {
        let [e, c] = self.raw_with(path, body, headers);
        same_answer(&format!("POST {path} {body} {headers:?}"), &e, &c)
    }

    /// The same POST to both, each with its own extra headers; returns both responses.
    pub fn raw_with(
        &mut self,
        path: &str,
        body: &str,
        headers: [&[(&str, &str)]; 2],
    ) -> [Response; 2] {
        let [a, b] = &mut self.conns;
        [
            a.post_with(path, headers[0], body),
            b.post_with(path, headers[1], body),
        ]
    }

    /// An error both answer with the same status and code, worded by each JSON decoder.
    pub fn same_error(&mut self, path: &str, body: &str) -> (u16, i64) {
        let [e, c] = self.raw("POST", path, body, false);
        let (ej, cj) = (e.json(), c.json());
        for j in [&ej, &cj] {
            assert_eq!(j["error"], j["message"], "{j}");
            assert!(j["error"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
            assert_eq!(j.as_object().unwrap().len(), 3, "{j}");
        }
        assert_eq!(
            (e.status, &e.content_type, &ej["code"]),
            (c.status, &c.content_type, &cj["code"]),
            "POST {path} {body}: etcd {ej} vs corekv {cj}"
        );
        (e.status, ej["code"].as_i64().unwrap())
    }

    /// A non-JSON answer both give the same (each on a new connection: etcd closes some
    /// after these).
    pub fn same_text(&mut self, method: &str, path: &str) -> (u16, String) {
        let [e, c] = [0, 1].map(|i| connect(self.port(i)).call(method, path, b"{}", false));
        let (et, ct) = (
            String::from_utf8_lossy(&e.body).into_owned(),
            String::from_utf8_lossy(&c.body).into_owned(),
        );
        assert_eq!((e.status, &et), (c.status, &ct), "{method} {path}");
        (e.status, et)
    }
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
