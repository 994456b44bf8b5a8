//! Maps cgroup ids (the inode numbers of cgroup directories, which is what
//! the kernel programs record) to Docker container names, for the optional
//! `container` label. Rescanned at each collection: a directory listing per
//! layout, bounded by the number of running containers.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where Docker puts container cgroups in the unified hierarchy, under the
/// host's sysfs, by cgroup driver and mount layout: (directory, name
/// prefix, name suffix).
const LAYOUTS: &[(&str, &str, &str)] = &[
    ("fs/cgroup/system.slice", "docker-", ".scope"),
    ("fs/cgroup/docker", "", ""),
    ("fs/cgroup/unified/system.slice", "docker-", ".scope"),
    ("fs/cgroup/unified/docker", "", ""),
];

/// Docker's state directory under the host's root, where each container's
/// config names it.
const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";

/// A host path: under HOST_SYS / HOST_ROOT when the agent runs in a
/// container with the host's filesystems mounted there.
fn host_path(var: &str, default: &str, rel: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| default.into(), PathBuf::from).join(rel)
}

/// Container names by cgroup id.
#[derive(Default)]
pub(super) struct Containers {
    by_cgroup: HashMap<u64, String>,
    /// Names by container id, kept across scans to read each config once.
    names: HashMap<String, String>,
}

/// Container ids by cgroup id, from the cgroup directories Docker makes
/// (before the container's first process runs, so before discovery has
/// heard of it).
pub(crate) fn scan_ids() -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for (dir, prefix, suffix) in LAYOUTS {
        let Ok(entries) = std::fs::read_dir(host_path("HOST_SYS", "/sys", dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(id) = file.to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|n| n.strip_suffix(suffix))
            else {
                continue;
            };
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            out.insert(meta.ino(), id.to_string());
        }
    }
    out
}

impl Containers {
    /// Rescans the cgroup directories.
    pub(super) fn refresh(&mut self) {
        self.by_cgroup.clear();
        let mut seen = Vec::new();
        for (ino, id) in scan_ids() {
            let name = self.names.entry(id.clone()).or_insert_with(|| container_name(&id)).clone();
            self.by_cgroup.insert(ino, name);
            seen.push(id);
        }
        self.names.retain(|id, _| seen.contains(id));
    }

    /// The container whose cgroup is `id`, if any.
    pub(super) fn get(&self, id: u64) -> Option<&str> {
        self.by_cgroup.get(&id).map(String::as_str)
    }
}

/// The container's name from Docker's config.v2.json ("Name": "/web"), or
/// its short id when that file is unreadable.
fn container_name(id: &str) -> String {
    let path = host_path("HOST_ROOT", "/", DOCKER_CONTAINERS).join(id).join("config.v2.json");
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("Name")?.as_str().map(|n| n.trim_start_matches('/').to_string()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id[..12].to_string())
}
