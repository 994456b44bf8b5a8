//! An exposition server for scrape tests: serves fixed bodies on loopback
//! over real HTTP/1.1, the way an application's /metrics endpoint does,
//! with optional basic auth and a delay to script slow targets.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Content-Type of the Prometheus text format.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content-Type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one path answers.
#[derive(Clone, Default)]
pub struct Route {
    pub body: Vec<u8>,
    pub content_type: String,
    /// Answer 401 unless the request has these credentials.
    pub basic_auth: Option<(String, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Route {
    /// A 0.0.4 text body.
    pub fn text(body: &str) -> Route {
        Route { body: body.as_bytes().to_vec(), content_type: TEXT_004.into(), ..Default::default() }
    }
}

/// Requests seen for one path.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub count: usize,
    pub accept: String,
    pub user_agent: String,
}

/// The server; it stops accepting when dropped (the listener thread ends
/// with the test process).
pub struct ExpoServer {
    pub port: u16,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl ExpoServer {
    /// Starts serving on a free loopback port.
    pub fn start() -> ExpoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind exposition server");
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &r, &s);
                });
            }
        });
        ExpoServer { port, routes, seen }
    }

    /// Serves `route` at `path` (replacing what was there).
    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }

    /// Requests seen at `path`.
    pub fn seen(&self, path: &str) -> Seen {
        self.seen.lock().unwrap().get(path).cloned().unwrap_or_default()
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn handle(
    mut conn: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    seen: &Mutex<HashMap<String, Seen>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.lines();
    let request = lines.next().unwrap_or("");
    let target = request.split(' ').nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    {
        let mut s = seen.lock().unwrap();
        let e = s.entry(path.clone()).or_default();
        e.count += 1;
        e.accept = headers.get("accept").cloned().unwrap_or_default();
        e.user_agent = headers.get("user-agent").cloned().unwrap_or_default();
    }
    let route = routes.lock().unwrap().get(&path).cloned();
    let Some(route) = route else {
        return conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    };
    std::thread::sleep(route.delay);
    if let Some((user, pass)) = &route.basic_auth {
        let want = format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()));
        if headers.get("authorization") != Some(&want) {
            return conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"metrics\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        route.content_type,
        route.body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(&route.body)?;
    conn.flush()
}

/// Kafka JMX exporter output for one broker, as jmx_prometheus_javaagent
/// writes it (0.0.4 text, HELP lines with the MBean, untyped and gauges).
pub fn kafka_jmx_body(messages_in: f64) -> String {
    format!(
        r#"# HELP jmx_config_reload_success_total Number of times configuration have successfully been reloaded.
# TYPE jmx_config_reload_success_total counter
jmx_config_reload_success_total 0.0
# HELP kafka_server_brokertopicmetrics_messagesin_total Attribute exposed for management kafka.server:name=MessagesInPerSec,type=BrokerTopicMetrics,attribute=Count
# TYPE kafka_server_brokertopicmetrics_messagesin_total untyped
kafka_server_brokertopicmetrics_messagesin_total{{topic="orders",}} {messages_in}
kafka_server_brokertopicmetrics_messagesin_total{{topic="trades",}} 42.0
# HELP kafka_server_replicamanager_underreplicatedpartitions Attribute exposed for management kafka.server:name=UnderReplicatedPartitions,type=ReplicaManager,attribute=Value
# TYPE kafka_server_replicamanager_underreplicatedpartitions gauge
kafka_server_replicamanager_underreplicatedpartitions 0.0
# HELP kafka_network_requestmetrics_totaltimems Attribute exposed for management kafka.network:name=TotalTimeMs,request=Produce,type=RequestMetrics,attribute=99thPercentile
# TYPE kafka_network_requestmetrics_totaltimems untyped
kafka_network_requestmetrics_totaltimems{{request="Produce",quantile="0.99",}} 12.5
# HELP jvm_memory_bytes_used Used bytes of a given JVM memory area.
# TYPE jvm_memory_bytes_used gauge
jvm_memory_bytes_used{{area="heap",}} 5.36870912E8
jvm_memory_bytes_used{{area="nonheap",}} 1.2345678E7
"#
    )
}
