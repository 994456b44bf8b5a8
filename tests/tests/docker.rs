//! Docker discovery against a real dockerd (started by the harness when none
//! runs): containers labelled `prometheus.scrape=true` are found through the
//! events stream and scraped with the shipped configs' relabel rules, and
//! go stale within 2 s of their removal; the agent runs without the Docker
//! socket and picks Docker up when it appears, and again after the daemon's
//! connection drops (a dockerd restart, as the agent sees it).

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vantage_tests::docker::{busybox_image, docker};
use vantage_tests::prometheus::Prometheus;
use vantage_tests::{free_port, http_get, vantage_bin, wait_for, workspace, Proc, TempDir};

/// A running agent and its HTTP base URL.
struct Agent {
    proc: Proc,
    base: String,
    log: PathBuf,
}

impl Agent {
    /// Starts `vantage run` on a config file of the repository with `env`
    /// on top of .env.example, and waits for /-/ready.
    fn start(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(vantage_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(workspace().join("config").join(config))
            .arg("--env-file")
            .arg(workspace().join(".env.example"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATA_DIR", dir.path())
            .env("SCRAPE_INTERVAL", "1s")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut agent = Agent { proc: Proc::spawn("vantage", cmd, &log), base: format!("http://127.0.0.1:{port}"), log };
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(exit)) = agent.proc.child.try_wait() {
                return Some(Err(exit));
            }
            http_get(&format!("{}/-/ready", agent.base)).filter(|(s, _)| *s == 200).map(Ok)
        });
        assert!(matches!(ready, Some(Ok(_))), "agent not ready ({ready:?}); log:\n{}", agent.log_text());
        agent
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status API's sources: name → (health, last_error).
    fn sources(&self) -> Vec<(String, String, String)> {
        let Some((200, body)) = http_get(&format!("{}/api/v1/status", self.base)) else { return Vec::new() };
        let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
        status["sources"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (k.clone(), v["health"].as_str().unwrap_or("").into(), v["last_error"].as_str().unwrap_or("").into())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn source(&self, name: &str) -> Option<(String, String)> {
        self.sources().into_iter().find(|(n, _, _)| n == name).map(|(_, h, e)| (h, e))
    }

    fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.base)).map(|(_, b)| b).unwrap_or_default()
    }
}

/// Containers removed when the test ends, whatever its outcome.
struct Containers(Vec<String>);

impl Containers {
    /// `docker run -d --name <name> <options> <image> sh -c <script>`; its
    /// IP address on the default bridge.
    fn run(&mut self, name: &str, options: &[&str], script: &str) -> String {
        self.0.push(name.to_string());
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(options);
        args.extend([busybox_image(), "sh", "-c", script]);
        docker(&args);
        docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

/// A busybox httpd on :8080 serving `body` at /metrics.
fn httpd_script(body: &str) -> String {
    format!("mkdir -p /www && printf '{body}' > /www/metrics && exec httpd -f -p 8080 -h /www")
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn labelled_container_is_discovered_scraped_and_goes_stale_within_2s() {
    let dir = TempDir::new("docker-sd");
    let tag = std::process::id();
    let (web, quiet) = (format!("vtd-web-{tag}"), format!("vtd-quiet-{tag}"));
    let mut containers = Containers(Vec::new());
    busybox_image();
    let prometheus = Prometheus::start("");
    // unified.toml as shipped: its docker-containers job holds the seed's rule.
    let agent = Agent::start(&dir, "unified.toml", &[("PROMETHEUS_URL", &prometheus.remote_write_url())]);
    let connected = wait_for(Duration::from_secs(10), || agent.source("docker/discovery").filter(|(h, _)| h == "up"));
    assert!(connected.is_some(), "discovery never connected: {:?}\n{}", agent.sources(), agent.log_text());

    // A container without the label is discovered but not scraped.
    let quiet_ip = containers.run(&quiet, &["-l", "prometheus.port=8080"], &httpd_script("vtd_quiet 1\\n"));
    let ip = containers.run(
        &web,
        // Two exposed ports: two discovered targets that the rule makes one.
        &[
            "-l",
            "prometheus.scrape=true",
            "-l",
            "prometheus.port=8080",
            "-l",
            "prometheus.path=/metrics",
            "--expose",
            "8080",
            "--expose",
            "9090",
        ],
        &httpd_script("# TYPE vtd_requests_total counter\\nvtd_requests_total{path=\"/\"} 42\\n"),
    );
    let started = Instant::now();
    let target = format!("scrape/docker-containers/{ip}:8080");
    let found = wait_for(Duration::from_secs(5), || agent.source(&target).map(|_| started.elapsed()));
    let found = found.unwrap_or_else(|| panic!("{target} never appeared: {:?}\n{}", agent.sources(), agent.log_text()));
    assert!(found <= Duration::from_secs(2), "the target appeared {found:?} after the container started");

    // The series arrive in Prometheus with container_name, the target's
    // job and instance and the config's external labels.
    let selector = format!("vtd_requests_total{{container_name=\"{web}\"}}");
    let series = wait_for(Duration::from_secs(20), || {
        let r = prometheus.query(&selector);
        (!r.is_empty()).then_some(r)
    });
    let series = series.unwrap_or_else(|| panic!("{selector} never reached Prometheus\n{}", agent.log_text()));
    assert_eq!(series.len(), 1, "{series:?}");
    let m = &series[0]["metric"];
    assert_eq!(m["job"], "docker-containers");
    assert_eq!(m["instance"], format!("{ip}:8080"));
    assert_eq!(m["path"], "/");
    assert_eq!(m["server_name"], "exchange-01");
    assert_eq!(series[0]["value"][1], "42");
    let scraped: Vec<String> =
        agent.sources().into_iter().map(|(n, _, _)| n).filter(|n| n.contains(&format!("/{ip}:"))).collect();
    // (Other tests' containers may be scraped too: look at this one's only.)
    assert_eq!(scraped, vec![target.clone()], "one target per container");
    assert!(
        agent.sources().iter().all(|(n, _, _)| !n.contains(&quiet_ip)),
        "the unlabelled container was scraped: {:?}",
        agent.sources()
    );
    assert!(prometheus.query("vtd_quiet").is_empty());

    // Removal: the target goes within 2 s and Prometheus sees the series end.
    // (First let a scrape or two land, so the series provably existed half a
    // second before the removal.)
    std::thread::sleep(Duration::from_millis(1500));
    let removed_at = unix_now();
    let removing = Instant::now();
    docker(&["rm", "-f", &web]);
    let gone = wait_for(Duration::from_secs(5), || agent.source(&target).is_none().then(|| removing.elapsed()));
    let gone = gone.unwrap_or_else(|| panic!("{target} still there after removal: {:?}", agent.sources()));
    assert!(gone <= Duration::from_secs(2), "the target went {gone:?} after the container was removed");
    // Without a stale marker the series would stay visible for the 5 m
    // lookback; with one it ends at the marker's timestamp.
    let ended = wait_for(Duration::from_secs(20), || prometheus.query_at(&selector, removed_at + 2.0).is_empty().then_some(()));
    assert!(ended.is_some(), "no stale marker within 2 s of the removal reached Prometheus");
    assert_eq!(prometheus.query_at(&selector, removed_at - 0.5).len(), 1, "the series should exist before the removal");
}

/// A unix-socket proxy in front of dockerd's socket: absent until started,
/// and cut (listener gone, every connection closed) to look like a daemon
/// restart from the agent's side.
struct SocketProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl SocketProxy {
    fn start(path: &Path, upstream: &'static str) -> SocketProxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind proxy socket");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (s, c) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = UnixStream::connect(upstream) else { continue };
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        SocketProxy { path: path.to_path_buf(), stop, conns, accept: Some(accept) }
    }

    fn cut(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn runs_without_the_socket_then_picks_docker_up_and_survives_a_daemon_restart() {
    let dir = TempDir::new("docker-socket");
    let tag = std::process::id();
    let mut containers = Containers(Vec::new());
    busybox_image();
    let socket = dir.path().join("docker.sock");
    let url = format!("unix://{}", socket.display());
    let agent = Agent::start(&dir, "local.toml", &[("DOCKER_HOST", &url)]);

    // No socket: the agent is ready, its other sources report, and
    // discovery says what is wrong, naming the socket, in one log line.
    let down = wait_for(Duration::from_secs(10), || agent.source("docker/discovery").filter(|(h, _)| h == "down"));
    let (_, error) = down.unwrap_or_else(|| panic!("discovery not down: {:?}", agent.sources()));
    assert!(error.contains(&socket.display().to_string()), "error does not name the socket: {error}");
    assert!(error.contains("no Docker socket"), "{error}");
    assert!(agent.metrics().contains("node_load1"), "node metrics missing while Docker is away");
    std::thread::sleep(Duration::from_secs(3));
    let warnings = agent.log_text().lines().filter(|l| l.contains("docker discovery: retrying")).count();
    assert_eq!(warnings, 1, "one warning per problem, not per retry:\n{}", agent.log_text());

    // The socket appears: discovery connects (the backoff is at most 4 s by
    // now) and the labelled container is scraped.
    let first = format!("vtd-first-{tag}");
    let ip = containers.run(&first, &["-l", "prometheus.scrape=true", "-l", "prometheus.port=8080"], &httpd_script("vtd_first 1\\n"));
    let proxy = SocketProxy::start(&socket, "/var/run/docker.sock");
    let up = wait_for(Duration::from_secs(10), || agent.source("docker/discovery").filter(|(h, _)| h == "up"));
    assert!(up.is_some(), "discovery did not connect once the socket appeared: {:?}", agent.sources());
    let series = format!("vtd_first{{container_name=\"{first}\",instance=\"{ip}:8080\",job=\"docker-containers\"}} 1");
    let scraped = wait_for(Duration::from_secs(10), || agent.metrics().contains(&series).then_some(()));
    assert!(scraped.is_some(), "{series} not served:\n{}", agent.metrics());

    // The daemon goes away: discovery notices, keeps what it knew, and a
    // container started meanwhile is found after the reconnection.
    proxy.cut();
    let lost = wait_for(Duration::from_secs(10), || agent.source("docker/discovery").filter(|(h, _)| h == "down"));
    assert!(lost.is_some(), "discovery did not notice the daemon going away: {:?}", agent.sources());
    let second = format!("vtd-second-{tag}");
    let ip2 = containers.run(&second, &["-l", "prometheus.scrape=true", "-l", "prometheus.port=8080"], &httpd_script("vtd_second 2\\n"));
    assert!(agent.metrics().contains(&series), "the known container's target should stay while dockerd is away");
    let _proxy = SocketProxy::start(&socket, "/var/run/docker.sock");
    let series2 = format!("vtd_second{{container_name=\"{second}\",instance=\"{ip2}:8080\",job=\"docker-containers\"}} 2");
    let resumed = wait_for(Duration::from_secs(15), || agent.metrics().contains(&series2).then_some(()));
    assert!(resumed.is_some(), "discovery did not resume after the restart:\n{:?}\n{}", agent.sources(), agent.log_text());
}

#[test]
fn local_and_unified_configs_carry_the_same_container_rule() {
    let block = |file: &str| {
        let text = std::fs::read_to_string(workspace().join("config").join(file)).unwrap();
        let start = text.find("job_name = \"docker-containers\"").unwrap_or_else(|| panic!("{file} has no docker-containers job"));
        let rest = &text[start..];
        rest[..rest.find("\n[[scrape]]").unwrap_or(rest.len())].trim().to_string()
    };
    let local = block("local.toml");
    assert!(local.contains("docker_sd = true") && local.contains("prometheus_scrape"), "{local}");
    assert_eq!(local, block("unified.toml"));
}
