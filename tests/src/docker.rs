//! Docker for the tests: a running dockerd (started here when `docker info`
//! fails) and a busybox image made with `docker import` from busybox-static's
//! binary (there is no registry).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Image name of the busybox image built by [`busybox_image`].
pub const IMAGE: &str = "vantage-busybox:2";

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs `docker <args>`; its stdout, or a panic with stderr.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes sure dockerd answers, starting it (detached, left running for
/// other tests) when it does not. `cargo xtask docker` does the same
/// (xtask/src/docker.rs), so the test command starts it before the tests.
pub fn ensure_dockerd() {
    crate::require_program("docker", "docker.io");
    if docker_ok(&["info"]) {
        return;
    }
    let dockerd = crate::require_program("dockerd", "docker.io");
    // The lock xtask takes too: one daemon starts, the others wait for it.
    let lock = std::fs::File::create("/run/vantage-dockerd.lock").expect("create /run/vantage-dockerd.lock");
    lock.lock().expect("lock /run/vantage-dockerd.lock");
    if docker_ok(&["info"]) {
        return;
    }
    let log_path = "/var/log/vantage-xtask-dockerd.log";
    let running = std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{}/comm", p.trim())).ok())
        .is_some_and(|comm| comm.trim() == "dockerd");
    if !running {
        let log = std::fs::File::create(log_path).expect("dockerd log");
        // Deliberately not waited for: dockerd outlives this test for the others.
        #[allow(clippy::zombie_processes)]
        Command::new(dockerd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
    }
    let up = crate::wait_for(Duration::from_secs(180), || docker_ok(&["info"]).then_some(()));
    assert!(up.is_some(), "dockerd did not answer within 180 s; see {log_path}");
}

/// Builds (once) an image holding busybox-static as /bin/busybox with the
/// applets the tests use linked beside it.
pub fn busybox_image() -> &'static str {
    ensure_dockerd();
    if docker_ok(&["image", "inspect", IMAGE]) {
        return IMAGE;
    }
    let busybox = crate::require_program("busybox", "busybox-static");
    let dir = crate::TempDir::new("busybox-rootfs");
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "head", "tr", "printf", "seq", "httpd", "dd", "yes", "mkdir", "wget", "md5sum",
        "true",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tar = dir.path().join("rootfs.tar");
    let ok =
        Command::new("tar").arg("-C").arg(dir.path().join("rootfs")).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(ok.success(), "tar of the busybox rootfs failed");
    import(&tar);
    IMAGE
}

fn import(tar: &Path) {
    docker(&["import", tar.to_str().unwrap(), IMAGE]);
}
