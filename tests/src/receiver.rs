//! A scriptable remote_write receiver for fault tests: it speaks real
//! HTTP/1.1 (optionally over TLS with rustls), decodes real snappy-block +
//! protobuf bodies (1.0 `prometheus.WriteRequest` and 2.0
//! `io.prometheus.write.v2.Request`, messages declared here independently of
//! the agent's), records every request, and answers what the test's script
//! says (a status, a Retry-After, a delay). Also: a self-signed CA and
//! server certificate made with `openssl`, and VictoriaMetrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;

use crate::{free_port, require_program, wait_for, Proc, TempDir};

mod wire {
    //! Field numbers from prometheus/prompb/types.proto, remote.proto and
    //! io/prometheus/write/v2/types.proto.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestV2 {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeriesV2>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeriesV2 {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
}

/// One series of a request, labels in the order they arrived.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value).
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The labels as `name{a="b",...}`-like key for grouping.
    pub fn key(&self) -> String {
        self.labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect::<Vec<_>>().join(",")
    }
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// Sequence number (0 = first request).
    pub n: usize,
    pub arrived: Instant,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub v2: bool,
    pub series: Vec<Series>,
    /// The status the script answered.
    pub status: u16,
    /// A decoding problem, if the body was not valid.
    pub error: Option<String>,
}

impl Received {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the script answers to a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 204 No Content.
    Ok,
    /// This status with this body and extra headers.
    Status(u16, String, Vec<(String, String)>),
    /// Sleep, then 204.
    SleepThenOk(Duration),
    /// Answer 415 to 2.0 requests, 204 to 1.0 ones.
    Only1_0,
}

/// The script: request number and request in, reply out.
pub type Script = Box<dyn FnMut(usize, &Received) -> Reply + Send>;

struct Shared {
    log: Mutex<Vec<Received>>,
    script: Mutex<Script>,
    stop: AtomicBool,
    count: AtomicUsize,
    tls_failures: AtomicUsize,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub port: u16,
    tls: bool,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// A plain-HTTP receiver on a free loopback port.
    pub fn start(script: Script) -> Receiver {
        Self::start_on(free_port(), script, None)
    }

    /// A receiver serving HTTPS with `cert` and `key` (PEM files).
    pub fn start_tls(script: Script, cert: &Path, key: &Path) -> Receiver {
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_file_iter(cert)
                .expect("read cert")
                .map(|c| c.expect("parse cert"))
                .collect();
        let key = <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_file(key)
            .expect("read key");
        let config =
            rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("server cert");
        Self::start_on(free_port(), script, Some(Arc::new(config)))
    }

    fn start_on(port: u16, script: Script, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            script: Mutex::new(script),
            stop: AtomicBool::new(false),
            count: AtomicUsize::new(0),
            tls_failures: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let is_tls = tls.is_some();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                        let (s, tls) = (s.clone(), tls.clone());
                        std::thread::spawn(move || match tls {
                            Some(cfg) => {
                                let conn = rustls::ServerConnection::new(cfg).unwrap();
                                let mut tls = rustls::StreamOwned::new(conn, stream);
                                // Finish the handshake first to tell TLS failures apart.
                                while tls.conn.is_handshaking() {
                                    match tls.conn.complete_io(&mut tls.sock) {
                                        Ok(_) => {}
                                        Err(e)
                                            if e.kind() == std::io::ErrorKind::WouldBlock
                                                || e.kind() == std::io::ErrorKind::TimedOut =>
                                        {
                                            if s.stop.load(Ordering::Relaxed) {
                                                return;
                                            }
                                        }
                                        Err(_) => {
                                            s.tls_failures.fetch_add(1, Ordering::Relaxed);
                                            return;
                                        }
                                    }
                                }
                                serve(&s, tls);
                            }
                            None => serve(&s, stream),
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { port, tls: is_tls, shared, thread: Some(thread) }
    }

    /// The remote_write URL.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/api/v1/write", if self.tls { "https" } else { "http" }, self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Replaces the script.
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// TLS handshakes that failed.
    pub fn tls_failures(&self) -> usize {
        self.shared.tls_failures.load(Ordering::Relaxed)
    }

    /// Stops listening (connections are refused from now on) and closes
    /// open connections; `restart` listens on the same port again.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Listens again on the same port with the same log and script.
    pub fn restart(&mut self) {
        assert!(!self.tls, "restart is for plain HTTP receivers");
        self.stop();
        let script = std::mem::replace(&mut *self.shared.script.lock().unwrap(), Box::new(|_, _| Reply::Ok));
        let log = std::mem::take(&mut *self.shared.log.lock().unwrap());
        let count = self.shared.count.load(Ordering::Relaxed);
        let fresh = Self::start_on(self.port, script, None);
        *fresh.shared.log.lock().unwrap() = log;
        fresh.shared.count.store(count, Ordering::Relaxed);
        *self = fresh;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves requests on one connection until it closes or the receiver stops.
fn serve<S: Read + Write>(shared: &Shared, stream: S) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        // Read the request head line by line, tolerating read timeouts
        // (they only exist so that a stopped receiver closes connections).
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if !line.is_empty() {
                        head.push(line.trim_end().to_string());
                    }
                }
                Err(_) => return,
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let headers: Vec<(String, String)> = head
            .iter()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize =
            headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match reader.read(&mut body[got..]) {
                Ok(0) => return,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let n = shared.count.fetch_add(1, Ordering::Relaxed);
        let v2 = headers.iter().any(|(k, v)| k == "content-type" && v.contains("io.prometheus.write.v2.Request"));
        let (series, error) = match decode(&body, v2) {
            Ok(s) => (s, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut rec = Received { n, arrived: Instant::now(), headers, v2, series, status: 0, error };
        let reply = (shared.script.lock().unwrap())(n, &rec);
        let (status, text, extra) = match reply {
            Reply::Ok => (204, String::new(), Vec::new()),
            Reply::Status(s, b, h) => (s, b, h),
            Reply::SleepThenOk(d) => {
                std::thread::sleep(d);
                (204, String::new(), Vec::new())
            }
            Reply::Only1_0 if v2 => (415, "unsupported protobuf message".to_string(), Vec::new()),
            Reply::Only1_0 => (204, String::new(), Vec::new()),
        };
        rec.status = status;
        shared.log.lock().unwrap().push(rec);
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", text.len());
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        let w = reader.get_mut();
        if w.write_all(resp.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

/// Decodes a snappy-block protobuf body.
pub fn decode(body: &[u8], v2: bool) -> Result<Vec<Series>, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("not snappy block format: {e}"))?;
    if v2 {
        let req = wire::RequestV2::decode(raw.as_slice()).map_err(|e| format!("protobuf v2: {e}"))?;
        if req.symbols.first().map(String::as_str) != Some("") {
            return Err("symbols[0] is not the empty string".into());
        }
        let sym = |i: u32| req.symbols.get(i as usize).cloned().ok_or(format!("symbol {i} out of range"));
        req.timeseries
            .iter()
            .map(|ts| {
                let labels =
                    ts.labels_refs.chunks(2).map(|p| Ok((sym(p[0])?, sym(p[1])?))).collect::<Result<_, String>>()?;
                Ok(Series { labels, samples: ts.samples.iter().map(|s| (s.timestamp, s.value)).collect() })
            })
            .collect()
    } else {
        let req = wire::WriteRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
        Ok(req
            .timeseries
            .into_iter()
            .map(|ts| Series {
                labels: ts.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                samples: ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            })
            .collect())
    }
}

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it,
/// made with `openssl` (Debian package openssl): (ca.pem, cert.pem, key.pem).
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = require_program("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl).args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vantage test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // rustls wants PKCS#8 keys.
    run(&["pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-out", "key8.pem"]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key8.pem"))
}

/// A real VictoriaMetrics (Debian package victoria-metrics) on a loopback
/// port: remote_write at /api/v1/write, PromQL at /api/v1/query.
pub struct VictoriaMetrics {
    pub port: u16,
    pub dir: TempDir,
    pub proc: Option<Proc>,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics with a fresh data directory.
    pub fn start() -> VictoriaMetrics {
        let mut vm = VictoriaMetrics { port: free_port(), dir: TempDir::new("victoria"), proc: None };
        vm.restart();
        vm
    }

    /// Stops it (SIGKILL): the port refuses connections.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.proc = None;
        let bin = require_program("victoria-metrics", "victoria-metrics");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.path().join("data").display()))
            .arg("-retentionPeriod=1d")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache");
        let log = self.dir.path().join(format!("vm-{}.log", Instant::now().elapsed().as_nanos()));
        self.proc = Some(Proc::spawn("victoria-metrics", cmd, &log));
        let ok = wait_for(Duration::from_secs(30), || {
            crate::http_get(&format!("{}/health", self.url())).filter(|(s, _)| *s == 200)
        });
        assert!(ok.is_some(), "victoria-metrics did not become healthy");
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The remote_write URL.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Raw samples of `selector` over the last `window` ("5m"), as
    /// (labels, [(ts seconds, value)]) from an instant range-vector query.
    pub fn raw_samples(&self, selector: &str, window: &str) -> Vec<(serde_json::Value, Vec<(f64, f64)>)> {
        let client = reqwest::blocking::Client::new();
        let resp: serde_json::Value = client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", format!("{selector}[{window}]"))])
            .send()
            .and_then(|r| r.json())
            .unwrap_or(serde_json::Value::Null);
        resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let values = r["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        (p[0].as_f64().unwrap_or(0.0), p[1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
                    })
                    .collect();
                (r["metric"].clone(), values)
            })
            .collect()
    }
}

/// Stops a running Prometheus (SIGKILL): its port refuses connections.
pub fn stop_prometheus(p: &mut crate::prometheus::Prometheus) {
    let _ = p.proc.child.kill();
    let _ = p.proc.child.wait();
}

/// Starts Prometheus again on the same port and data directory, with the
/// flags of [`crate::prometheus::Prometheus::start`].
pub fn restart_prometheus(p: &mut crate::prometheus::Prometheus) {
    stop_prometheus(p);
    let bin = require_program("prometheus", "prometheus");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", p.dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", p.dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", p.port))
        .arg("--web.enable-remote-write-receiver")
        .arg("--storage.tsdb.retention.time=1d")
        .arg("--query.lookback-delta=5m");
    p.proc = Proc::spawn("prometheus", cmd, &p.dir.path().join("prometheus-restarted.log"));
    let ready = wait_for(Duration::from_secs(30), || {
        crate::http_get(&format!("{}/-/ready", p.url())).filter(|(s, _)| *s == 200)
    });
    assert!(ready.is_some(), "prometheus did not come back");
}
