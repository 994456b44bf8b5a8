//! Docker against a real dockerd (started by the harness when none runs):
//! containers labelled `prometheus.scrape=true` are found through the events
//! stream and scraped with the shipped configs' relabel rules, and they and
//! their container metrics go stale within 2 s of their removal; container
//! metrics agree with the cgroup files and `docker stats`; the agent runs
//! without the Docker socket and picks Docker up when it appears, and again
//! after the daemon's connection drops (a dockerd restart, as the agent sees
//! it).

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
    /// Starts `vantage run` on a config file of the repository (or a path)
    /// with `env` on top of .env.example, and waits for /-/ready.
    fn start(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(vantage_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(if config.contains('/') { PathBuf::from(config) } else { workspace().join("config").join(config) })
            .arg("--env-file")
            .arg(workspace().join(".env.example"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATA_DIR", dir.path())
            .env("SCRAPE_INTERVAL", "1s")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut agent =
            Agent { proc: Proc::spawn("vantage", cmd, &log), base: format!("http://127.0.0.1:{port}"), log };
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
                        (
                            k.clone(),
                            v["health"].as_str().unwrap_or("").into(),
                            v["last_error"].as_str().unwrap_or("").into(),
                        )
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
    let memory = format!("container_memory_usage_bytes{{name=\"{web}\",job=\"cadvisor\"}}");
    let arrived = wait_for(Duration::from_secs(10), || (!prometheus.query(&memory).is_empty()).then_some(()));
    assert!(arrived.is_some(), "{memory} never reached Prometheus");

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
    let ended =
        wait_for(Duration::from_secs(20), || prometheus.query_at(&selector, removed_at + 2.0).is_empty().then_some(()));
    assert!(ended.is_some(), "no stale marker within 2 s of the removal reached Prometheus");
    assert_eq!(prometheus.query_at(&selector, removed_at - 0.5).len(), 1, "the series should exist before the removal");
    let ended =
        wait_for(Duration::from_secs(20), || prometheus.query_at(&memory, removed_at + 2.0).is_empty().then_some(()));
    assert!(ended.is_some(), "container metrics did not go stale within 2 s of the removal");
    assert_eq!(
        prometheus.query_at(&memory, removed_at - 0.5).len(),
        1,
        "container metrics should exist before the removal"
    );
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
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
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
    let ip = containers.run(
        &first,
        &["-l", "prometheus.scrape=true", "-l", "prometheus.port=8080"],
        &httpd_script("vtd_first 1\\n"),
    );
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
    let ip2 = containers.run(
        &second,
        &["-l", "prometheus.scrape=true", "-l", "prometheus.port=8080"],
        &httpd_script("vtd_second 2\\n"),
    );
    assert!(agent.metrics().contains(&series), "the known container's target should stay while dockerd is away");
    let _proxy = SocketProxy::start(&socket, "/var/run/docker.sock");
    let series2 =
        format!("vtd_second{{container_name=\"{second}\",instance=\"{ip2}:8080\",job=\"docker-containers\"}} 2");
    let resumed = wait_for(Duration::from_secs(15), || agent.metrics().contains(&series2).then_some(()));
    assert!(
        resumed.is_some(),
        "discovery did not resume after the restart:\n{:?}\n{}",
        agent.sources(),
        agent.log_text()
    );
}

#[test]
fn local_and_unified_configs_carry_the_same_container_rule() {
    let block = |file: &str| {
        let text = std::fs::read_to_string(workspace().join("config").join(file)).unwrap();
        let start = text
            .find("job_name = \"docker-containers\"")
            .unwrap_or_else(|| panic!("{file} has no docker-containers job"));
        let rest = &text[start..];
        rest[..rest.find("\n[[scrape]]").unwrap_or(rest.len())].trim().to_string()
    };
    let local = block("local.toml");
    assert!(local.contains("docker_sd = true") && local.contains("prometheus_scrape"), "{local}");
    assert_eq!(local, block("unified.toml"));
}

/// `vantage collect --once` with only the Docker source; the value of the
/// one series whose text starts with `prefix`, and when it was taken (the
/// middle of the run).
fn collect_container_metrics(config: &Path) -> (String, Instant) {
    let before = Instant::now();
    let out =
        Command::new(vantage_bin()).args(["collect", "--once", "--config"]).arg(config).output().expect("run vantage");
    let after = Instant::now();
    assert!(out.status.success(), "collect --once: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), before + (after - before) / 2)
}

fn value(text: &str, prefix: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// One cgroup v1 file of a container (this machine: cgroupfs driver).
fn cgroup_file(controller: &str, id: &str, file: &str) -> String {
    let path = format!("/sys/fs/cgroup/{controller}/docker/{id}/{file}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn stat_value(text: &str, key: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' '))).unwrap().trim().parse().unwrap()
}

/// `docker stats --no-stream` of a container: (CPU %, memory bytes).
fn docker_stats(name: &str) -> (f64, f64) {
    let out = docker(&["stats", "--no-stream", "--format", "{{.CPUPerc}} {{.MemUsage}}", name]);
    let mut parts = out.split_whitespace();
    let cpu: f64 = parts.next().unwrap().trim_end_matches('%').parse().unwrap();
    let mem = parts.next().unwrap();
    let (number, unit) = mem.split_at(mem.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let scale = match unit {
        "B" => 1.0,
        "KiB" | "kB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {out}"),
    };
    (cpu, number.parse::<f64>().unwrap() * scale)
}

fn within(actual: f64, expected: f64, share: f64) -> bool {
    (actual - expected).abs() <= expected.abs() * share
}

#[test]
fn container_metrics_follow_cpu_and_memory_like_the_cgroup_files_and_docker_stats() {
    let dir = TempDir::new("docker-metrics");
    let tag = std::process::id();
    let (burn, fill) = (format!("vtm-burn-{tag}"), format!("vtm-fill-{tag}"));
    let mut containers = Containers(Vec::new());
    busybox_image();
    let config =
        dir.write("docker.toml", "[node]\nenabled = false\n[ebpf]\nenabled = false\n[docker]\ninstance = \"host-1\"\n");
    containers.run(&burn, &["-l", "com.example.team=payments"], "yes > /dev/null");
    // The filler idles until the test writes into its /dev/shm between the
    // two collections (below): no race with the container's own clock.
    containers.run(&fill, &[], "sleep 600");
    let burn_id = docker(&["inspect", "-f", "{{.Id}}", &burn]);
    let fill_id = docker(&["inspect", "-f", "{{.Id}}", &fill]);
    std::thread::sleep(Duration::from_millis(1500));

    let cpu_series = format!("container_cpu_usage_seconds_total{{container_label_com_example_team=\"payments\",cpu=\"total\",id=\"/docker/{burn_id}\",image=\"{}\",instance=\"host-1\",job=\"cadvisor\",name=\"{burn}\"}}", busybox_image());
    let ws_series = format!("container_memory_working_set_bytes{{id=\"/docker/{fill_id}\",image=\"{}\",instance=\"host-1\",job=\"cadvisor\",name=\"{fill}\"}}", busybox_image());
    // The kernel's own CPU counter of the busy container, and when it was read.
    let cgroup_cpu =
        || (cgroup_file("cpuacct", &burn_id, "cpuacct.usage").trim().parse::<f64>().unwrap() / 1e9, Instant::now());
    let (first, t1) = collect_container_metrics(&config);
    let (cg1, tc1) = cgroup_cpu();
    // 24 MiB into the container's /dev/shm (tmpfs: charged to its memory
    // cgroup, since `docker exec` runs inside it, and never inactive file
    // cache), written and done before the second collection starts.
    docker(&["exec", &fill, "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=24"]);
    std::thread::sleep(Duration::from_secs(6));
    let (second, t2) = collect_container_metrics(&config);
    let (cg2, tc2) = cgroup_cpu();
    // docker stats samples the same counter over about a second inside the
    // call: the kernel's rate across the call is its reference.
    let (cs1, ts1) = cgroup_cpu();
    let (stats_cpu, _) = docker_stats(&burn);
    let (cs2, ts2) = cgroup_cpu();
    let (_, stats_mem) = docker_stats(&fill);
    let memory_stat = cgroup_file("memory", &fill_id, "memory.stat");
    let cg_ws = cgroup_file("memory", &fill_id, "memory.usage_in_bytes").trim().parse::<f64>().unwrap()
        - stat_value(&memory_stat, "total_inactive_file");

    // CPU: the agent's counter of the busy loop moves as the kernel's own
    // does over the same interval (within 10 %). That is about one core on
    // an idle machine and less on a busy one, so the kernel's rate is the
    // reference, never an assumed 1.0; one thread can still not exceed one
    // core (5 % for the read offsets). docker stats, sampled over its own
    // second, matches the kernel's rate across the call within 25 % (the
    // loop's share of a busy machine varies within the call).
    let (c1, c2) = (value(&first, &cpu_series), value(&second, &cpu_series));
    let rate = (c2 - c1) / (t2 - t1).as_secs_f64();
    let kernel_rate = (cg2 - cg1) / (tc2 - tc1).as_secs_f64();
    assert!(cg2 > cg1 && kernel_rate <= 1.05, "the busy loop used {kernel_rate:.3} cores by its cgroup");
    assert!(within(rate, kernel_rate, 0.10), "agent's {rate:.3} cores vs the cgroup's {kernel_rate:.3}");
    assert!(within(c2 - c1, cg2 - cg1, 0.10), "agent's CPU delta {:.3} s vs cgroup file {:.3} s", c2 - c1, cg2 - cg1);
    let around = (cs2 - cs1) / (ts2 - ts1).as_secs_f64() * 100.0;
    assert!(
        within(stats_cpu, around, 0.25),
        "docker stats says {stats_cpu} %, the cgroup across the call {around:.1} %"
    );

    // Memory: the working set grew by the 24 MiB written meanwhile (less at
    // most 1 MiB: the exited exec's own pages and slab may be uncharged in
    // between; a run beside stress-ng saw 80 kB), and matches the cgroup
    // files and docker stats (which for cgroup v1 is usage minus
    // total_inactive_file too).
    let (w1, w2) = (value(&first, &ws_series), value(&second, &ws_series));
    assert!(w2 - w1 >= 23.0 * 1024.0 * 1024.0, "working set grew only {w1} -> {w2}");
    assert!(within(w2, cg_ws, 0.10), "agent's working set {w2} vs cgroup files {cg_ws}");
    assert!(within(stats_mem, w2, 0.10), "docker stats says {stats_mem} bytes, the agent {w2}");

    // Every family cAdvisor users expect for a running container.
    for family in [
        "container_cpu_user_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_cfs_periods_total",
        "container_memory_rss",
        "container_memory_cache",
        "container_memory_swap",
        "container_memory_failcnt",
        "container_spec_memory_limit_bytes",
        "container_spec_cpu_period",
        "container_spec_cpu_shares",
        "container_network_receive_bytes_total",
        "container_network_transmit_packets_dropped_total",
        "container_processes",
        "container_start_time_seconds",
        "container_last_seen",
        "container_oom_events_total",
    ] {
        assert!(
            second.lines().any(|l| l.starts_with(family) && l.contains(&format!("name=\"{burn}\""))),
            "no {family} for {burn}"
        );
    }
    let state = format!("container_state{{container_label_com_example_team=\"payments\",id=\"/docker/{burn_id}\",image=\"{}\",instance=\"host-1\",job=\"cadvisor\",name=\"{burn}\",state=\"running\"}} 1", busybox_image());
    assert!(second.contains(&state), "{state} missing");
    let procs = cgroup_file("pids", &burn_id, "cgroup.procs").lines().count() as f64;
    let reported = value(
        &second,
        &format!("container_processes{{container_label_com_example_team=\"payments\",id=\"/docker/{burn_id}\""),
    );
    assert_eq!((reported, procs), (1.0, 1.0), "sh execs its one command: yes alone runs");
}
