//! The agent's endpoint secured by a node_exporter-style web-config.yml
//! (exporter-toolkit format): a real Prometheus 2.42 scrapes /metrics over
//! TLS with basic auth, and with a client certificate when the file says
//! RequireAndVerifyClientCert; a wrong password gets 401, plain HTTP fails,
//! the status page and API need the same password, `vantage probe` speaks
//! TLS, and `vantage check` refuses bad files naming the file and key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vantage_tests::prometheus::Prometheus;
use vantage_tests::receiver::make_certs;
use vantage_tests::{free_port, require_program, vantage, vantage_bin, wait_for, Proc, TempDir};

const PASSWORD: &str = "correct horse";

/// A client certificate signed by the test CA (the one `make_certs` made in `dir`).
fn client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = require_program("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl).args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "client.key"]
        .into_iter()
        .chain(["-out", "client.csr", "-subj", "/CN=prometheus"])
        .collect::<Vec<_>>());
    std::fs::write(dir.join("client.cnf"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
    ]);
    run(&["pkcs8", "-topk8", "-nocrypt", "-in", "client.key", "-out", "client8.key"]);
    (dir.join("client.pem"), dir.join("client8.key"))
}

/// A bcrypt hash as htpasswd writes it (`$2y$`).
fn htpasswd_hash(password: &str) -> String {
    let h = bcrypt::hash(password, 10).unwrap();
    format!("$2y${}", &h[4..])
}

struct Agent {
    port: u16,
    _proc: Proc,
    _dir: TempDir,
}

/// An agent (node only, fast) serving with `web.yml` from `dir`; ready
/// once `vantage probe` over TLS says so.
fn agent(dir: TempDir, web: &Path) -> Agent {
    let a = start_agent(dir, web);
    let (port, web) = (a.port, web.to_str().unwrap());
    let probe = || {
        let out = vantage(&["probe", "--listen", &format!("127.0.0.1:{port}"), "--web.config.file", web]);
        out.status.success().then_some(())
    };
    wait_for(Duration::from_secs(20), probe).unwrap_or_else(|| {
        panic!(
            "vantage probe over TLS never succeeded: {}",
            std::fs::read_to_string(a._dir.path().join("agent.log")).unwrap()
        )
    });
    a
}

fn start_agent(dir: TempDir, web: &Path) -> Agent {
    let port = free_port();
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nscrape_interval = \"1s\"\n\n\
             [node]\nenable = [\"loadavg\"]\n\n[ebpf]\nenabled = false\n\n[docker]\nenabled = false\n",
            dir.path().join("data").display()
        ),
    );
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", config.to_str().unwrap(), "--web.config.file", web.to_str().unwrap()]);
    let proc = Proc::spawn("vantage", cmd, &dir.path().join("agent.log"));
    Agent { port, _proc: proc, _dir: dir }
}

fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b =
        reqwest::blocking::Client::builder().use_rustls_tls().add_root_certificate(ca).timeout(Duration::from_secs(30));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

fn up(prom: &Prometheus, job: &str) -> Option<f64> {
    let r = prom.query(&format!("up{{job=\"{job}\"}}"));
    r.first().and_then(|s| s["value"][1].as_str()?.parse().ok())
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_everything_needs_the_password() {
    let dir = TempDir::new("web-tls");
    let (ca, cert, key) = make_certs(dir.path());
    // node_exporter's documented layout, relative file names included.
    let web = dir.write(
        "web-config.yml",
        &format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key8.pem\n  min_version: TLS12\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  prometheus: {}\n",
            htpasswd_hash(PASSWORD)
        ),
    );
    let a = agent(TempDir::new("web-tls-agent"), &web);
    let target = format!("127.0.0.1:{}", a.port);
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: \"{password}\"\n    static_configs:\n      - targets: ['{target}']\n",
            ca.display()
        )
    };
    let prom = Prometheus::start(&format!("{}{}", job("vantage", PASSWORD), job("wrong", "not it")));
    wait_for(Duration::from_secs(30), || {
        (up(&prom, "vantage") == Some(1.0) && up(&prom, "wrong").is_some()).then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus never scraped over TLS: {:?}", prom.query("up")));
    assert_eq!(up(&prom, "wrong"), Some(0.0), "a wrong password is not scraped");
    let built = prom.query("vantage_build_info{job=\"vantage\"}");
    assert_eq!(built.len(), 1, "the agent's own metrics arrived: {built:?}");

    let https = client(&ca, None);
    let url = |path: &str| format!("https://{target}{path}");
    for path in ["/metrics", "/", "/api/v1/status"] {
        let r = https.get(url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path} without a password");
        assert_eq!(r.headers()["www-authenticate"], "Basic");
        assert_eq!(r.headers()["x-frame-options"], "deny", "headers on a 401 too");
        let r = https.get(url(path)).basic_auth("prometheus", Some("not it")).send().unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong password");
        let r = https.get(url(path)).basic_auth("prometheus", Some(PASSWORD)).send().unwrap();
        assert_eq!(r.status(), 200, "{path} with the password");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let page = https.get(url("/")).basic_auth("prometheus", Some(PASSWORD)).send().unwrap().text().unwrap();
    assert!(page.contains("<h1>Vantage"), "{page}");
    // The probes stay open, still only over TLS.
    assert_eq!(https.get(url("/-/ready")).send().unwrap().status(), 200);
    let plain = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let r = plain.get(format!("http://{target}/metrics")).send();
    assert!(r.is_err(), "plain HTTP to the TLS port must fail: {:?}", r.map(|r| r.status()));

    // A renewed certificate (another CA's, to tell them apart) is served
    // from the next handshake on, without a restart.
    assert_eq!(served_cert(&ca, &target), der(&cert));
    let renewed = TempDir::new("web-tls-renewed");
    let (ca2, cert2, key2) = make_certs(renewed.path());
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    assert_eq!(served_cert(&ca2, &target), der(&cert2), "the new certificate is served");
    let _ = &prom;
}

fn der(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

/// The certificate the agent presents, as seen by a client trusting `ca`.
fn served_cert(ca: &Path, target: &str) -> Vec<u8> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let c = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = c.get(format!("https://{target}/-/healthy")).send().unwrap();
    r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()).expect("TLS info").to_vec()
}

#[test]
fn a_client_certificate_is_required_when_the_file_says_so() {
    let dir = TempDir::new("web-mtls");
    let (ca, _, _) = make_certs(dir.path());
    let (client_pem, client_key) = client_cert(dir.path());
    let web = dir.write(
        "web-config.yml",
        &format!(
            "tls_server_config:\n  cert_file: {0}/cert.pem\n  key_file: {0}/key8.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {0}/ca.pem\n\
             basic_auth_users:\n  prometheus: {1}\n",
            dir.path().display(),
            htpasswd_hash(PASSWORD)
        ),
    );
    let a = start_agent(TempDir::new("web-mtls-agent"), &web);
    let target = format!("127.0.0.1:{}", a.port);
    let with = client(&ca, Some((&client_pem, &client_key)));
    wait_for(Duration::from_secs(20), || {
        with.get(format!("https://{target}/-/ready")).send().ok().filter(|r| r.status() == 200)
    })
    .expect("the agent is ready over mutual TLS");
    let prom = Prometheus::start(&format!(
        "  - job_name: mtls\n    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n    basic_auth:\n      username: prometheus\n      password: \"{PASSWORD}\"\n    static_configs:\n      - targets: ['{target}']\n\
         \n  - job_name: nocert\n    scheme: https\n    tls_config:\n      ca_file: {0}\n    basic_auth:\n      username: prometheus\n      password: \"{PASSWORD}\"\n    static_configs:\n      - targets: ['{target}']\n",
        ca.display(),
        client_pem.display(),
        client_key.display()
    ));
    wait_for(Duration::from_secs(30), || {
        (up(&prom, "mtls") == Some(1.0) && up(&prom, "nocert").is_some()).then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus with a client certificate never scraped: {:?}", prom.query("up")));
    assert_eq!(up(&prom, "nocert"), Some(0.0), "without a client certificate");
    let r = with.get(format!("https://{target}/metrics")).basic_auth("prometheus", Some(PASSWORD)).send().unwrap();
    assert_eq!(r.status(), 200);
    let without = client(&ca, None);
    assert!(without.get(format!("https://{target}/-/ready")).send().is_err(), "the handshake needs a certificate");
}

#[test]
fn check_refuses_bad_web_config_files_naming_file_and_key() {
    let dir = TempDir::new("web-check");
    let config = dir.write("agent.toml", "[agent]\nlisten_addr = \"127.0.0.1:1\"\n");
    let cases: &[(&str, &str, &str)] = &[
        ("typo.yml", "tls_server_config:\n  cert_fil: c.pem\n", "cert_fil"),
        ("missing.yml", "tls_server_config:\n  cert_file: nothere.pem\n  key_file: nothere.key\n", "tls_server_config.cert_file"),
        ("hash.yml", "basic_auth_users:\n  prometheus: plaintext\n", "basic_auth_users.prometheus"),
        ("auth.yml", "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAndVerifyClientCert\n", "tls_server_config.client_ca_file"),
    ];
    for (name, text, key) in cases {
        let web = dir.write(name, text);
        let out = vantage(&["check", "--config", config.to_str().unwrap(), "--web.config.file", web.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&web.display().to_string()) && err.contains(key), "{name}: {err}");
        assert!(!err.contains("plaintext"), "no secret in the message: {err}");
        // run refuses it too, with EX_CONFIG.
        let out = Command::new(vantage_bin())
            .args(["run", "--config", config.to_str().unwrap(), "--web.config.file", web.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
