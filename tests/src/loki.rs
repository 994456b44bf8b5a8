//! A Loki push receiver for tests. Grafana Loki is not packaged for this
//! machine, so this stands in for it: it speaks the real wire format
//! (HTTP/1.1 POST /loki/api/v1/push, snappy block format, protobuf
//! `logproto.PushRequest`, decoded here by hand and independently of the
//! agent's own encoder), records what arrived, and can be scripted to be
//! down (connections refused) or to answer given status codes.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One entry as Loki would store it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub labels: BTreeMap<String, String>,
    pub timestamp_ns: i64,
    pub line: String,
}

/// One accepted push request.
#[derive(Clone, Debug)]
pub struct Request {
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    pub entries: usize,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    requests: Vec<Request>,
    /// Statuses (and bodies) to answer the next requests with, instead of 204.
    script: VecDeque<(u16, String)>,
    /// Sent as Retry-After (seconds) with scripted 429s.
    retry_after: Option<u64>,
    /// When each scripted error was answered.
    refused_at: Vec<std::time::Instant>,
    /// Requests answered with a scripted error.
    refused: usize,
}

/// The receiver; stops when dropped.
pub struct Loki {
    pub port: u16,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Loki {
    /// Starts on a free loopback port.
    pub fn start() -> Loki {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loki receiver");
        let port = listener.local_addr().unwrap().port();
        let loki = Loki {
            port,
            state: Arc::default(),
            down: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (state, down, stop) = (loki.state.clone(), loki.down.clone(), loki.stop.clone());
        std::thread::spawn(move || accept_loop(Some(listener), port, state, down, stop));
        loki
    }

    /// Base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Down: the port refuses connections and open ones are closed. Up again
    /// with `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Answers the next requests with these statuses and bodies.
    pub fn script(&self, answers: &[(u16, &str)]) {
        let mut s = self.state.lock().unwrap();
        s.script.extend(answers.iter().map(|(c, b)| (*c, b.to_string())));
    }

    /// Sends `Retry-After: secs` with every scripted 429.
    pub fn set_retry_after(&self, secs: u64) {
        self.state.lock().unwrap().retry_after = Some(secs);
    }

    /// When each scripted error was answered, in order.
    pub fn refused_at(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().refused_at.clone()
    }

    /// Every entry received so far, in arrival order.
    pub fn entries(&self) -> Vec<Entry> {
        self.state.lock().unwrap().entries.clone()
    }

    /// Number of entries received so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    /// Accepted requests.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests answered with a scripted error status.
    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }
}

impl Drop for Loki {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    mut listener: Option<TcpListener>,
    port: u16,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        if down.load(Ordering::SeqCst) {
            listener = None; // closing the socket: connections are refused
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => {
                    listener = Some(l);
                    listener.as_ref().unwrap()
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((conn, _)) => {
                let (state, down) = (state.clone(), down.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, state, down);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>, down: Arc<AtomicBool>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        // Request line, waiting in short steps so that `down` closes idle
        // keep-alive connections as a stopped server would.
        let mut line = String::new();
        loop {
            if down.load(Ordering::SeqCst) {
                return Ok(());
            }
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            }
        }
        reader.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        reader.get_ref().set_read_timeout(Some(Duration::from_millis(200)))?;
        if down.load(Ordering::SeqCst) {
            return Ok(()); // dropped mid-request: the client sees a network error
        }
        let (status, text) = handle(&line, &headers, &body, &state);
        let retry_after = match state.lock().unwrap().retry_after {
            Some(secs) if status == 429 => format!("Retry-After: {secs}\r\n"),
            _ => String::new(),
        };
        let reason = match status {
            204 => "No Content",
            400 => "Bad Request",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Status",
        };
        write!(
            out,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{retry_after}\r\n{text}",
            text.len()
        )?;
        out.flush()?;
    }
}

fn handle(line: &str, headers: &BTreeMap<String, String>, body: &[u8], state: &Mutex<State>) -> (u16, String) {
    if !line.starts_with("POST /loki/api/v1/push ") {
        return (404, format!("no route for {line}"));
    }
    {
        let mut s = state.lock().unwrap();
        if let Some((code, text)) = s.script.pop_front() {
            s.refused += 1;
            s.refused_at.push(std::time::Instant::now());
            return (code, text);
        }
    }
    if headers.get("content-type").map(String::as_str) != Some("application/x-protobuf") {
        return (415, "expected application/x-protobuf".into());
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(r) => r,
        Err(e) => return (400, format!("snappy: {e}")),
    };
    let entries = match decode_push(&raw) {
        Ok(e) => e,
        Err(e) => return (400, format!("protobuf: {e}")),
    };
    let mut s = state.lock().unwrap();
    s.requests.push(Request {
        tenant: headers.get("x-scope-orgid").cloned(),
        authorization: headers.get("authorization").cloned(),
        entries: entries.len(),
    });
    s.entries.extend(entries);
    (204, String::new())
}

/// A minimal protobuf reader: (field number, wire type, payload).
struct Fields<'a> {
    buf: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        Some((|| {
            let key = varint(&mut self.buf)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => Ok((field, Value::Varint(varint(&mut self.buf)?))),
                2 => {
                    let len = varint(&mut self.buf)? as usize;
                    if len > self.buf.len() {
                        return Err("truncated field".into());
                    }
                    let (v, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    Ok((field, Value::Bytes(v)))
                }
                w => Err(format!("unexpected wire type {w} for field {field}")),
            }
        })())
    }
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| format!("invalid UTF-8 in a string field: {e}"))
}

/// Decodes a `logproto.PushRequest` into entries.
pub fn decode_push(raw: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for f in (Fields { buf: raw }) {
        let (1, Value::Bytes(stream)) = f? else { return Err("PushRequest: unexpected field".into()) };
        let mut labels = None;
        let mut entries = Vec::new();
        for f in (Fields { buf: stream }) {
            match f? {
                (1, Value::Bytes(l)) => labels = Some(parse_selector(&text(l)?)?),
                (2, Value::Bytes(e)) => {
                    let (mut ts, mut line) = (0i64, String::new());
                    for f in (Fields { buf: e }) {
                        match f? {
                            (1, Value::Bytes(t)) => {
                                let (mut secs, mut nanos) = (0i64, 0i64);
                                for f in (Fields { buf: t }) {
                                    match f? {
                                        (1, Value::Varint(v)) => secs = v as i64,
                                        (2, Value::Varint(v)) => nanos = v as i32 as i64,
                                        _ => return Err("Timestamp: unexpected field".into()),
                                    }
                                }
                                ts = secs * 1_000_000_000 + nanos;
                            }
                            (2, Value::Bytes(l)) => line = text(l)?,
                            (3, _) => {}
                            _ => return Err("EntryAdapter: unexpected field".into()),
                        }
                    }
                    entries.push((ts, line));
                }
                (3, Value::Varint(_)) => {}
                _ => return Err("StreamAdapter: unexpected field".into()),
            }
        }
        let labels = labels.ok_or("StreamAdapter without labels")?;
        if labels.is_empty() {
            return Err("a stream needs at least one label".into());
        }
        out.extend(entries.into_iter().map(|(timestamp_ns, line)| Entry {
            labels: labels.clone(),
            timestamp_ns,
            line,
        }));
    }
    Ok(out)
}

/// Parses `{a="b", c="d"}` as Loki does for pushed streams.
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, String> {
    let inner = s.trim().strip_prefix('{').and_then(|x| x.strip_suffix('}')).ok_or(format!("bad selector {s:?}"))?;
    let mut out = BTreeMap::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or(format!("bad selector {s:?}"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or(format!("unclosed value in {s:?}"))?;
        out.insert(name.trim().to_string(), value);
        rest = after[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    Ok(out)
}
