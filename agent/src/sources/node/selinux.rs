//! The `selinux` collector: node_exporter 1.5's three families from the
//! files libselinux reads: selinuxfs (<sys>/fs/selinux/enforce, present only
//! when SELinux is on), the process's context (a context of "kernel" means
//! SELinux is off) and the configured mode in <root>/etc/selinux/config.
//! SELinux off is `node_selinux_enabled 0` and success, as in node_exporter.

use std::path::PathBuf;

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

pub(super) struct Selinux {
    enforce: PathBuf,
    context: PathBuf,
    config: PathBuf,
}

impl Selinux {
    pub fn new(c: &NodeConfig) -> Self {
        Selinux {
            enforce: c.sys_path.join("fs/selinux/enforce"),
            context: c.proc_path.join("self/attr/current"),
            config: c.root_path.join("etc/selinux/config"),
        }
    }
}

/// The `SELINUX=` mode of the config file as libselinux numbers it:
/// enforcing 1, permissive 0, disabled (or unset, or no file) -1.
fn config_mode(text: &str) -> f64 {
    let mode = text.lines().rev().find_map(|l| l.trim().strip_prefix("SELINUX=")).unwrap_or("");
    match mode.trim().trim_matches('"') {
        "enforcing" => 1.0,
        "permissive" => 0.0,
        _ => -1.0,
    }
}

impl Sub for Selinux {
    fn name(&self) -> &'static str {
        "selinux"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let enabled_help = "SELinux is enabled, 1 is true, 0 is false";
        let current = match std::fs::read_to_string(&self.enforce) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(NodeError::read(&self.enforce, e)),
        };
        // Only looked at when selinuxfs is there: SELinux off costs one failed open.
        let kernel_context = || {
            std::fs::read(&self.context).is_ok_and(|c| c.strip_suffix(b"\0").unwrap_or(&c).trim_ascii() == b"kernel")
        };
        let Some(current) = current.filter(|_| !kernel_context()) else {
            out.single("node_selinux_enabled", MetricType::Gauge, enabled_help, &[], 0.0);
            return Ok(());
        };
        let current: f64 = current
            .trim()
            .parse()
            .map_err(|_| NodeError::parse(&self.enforce, format!("bad mode {:?}", current.trim())))?;
        let config = std::fs::read_to_string(&self.config).map(|t| config_mode(&t)).unwrap_or(-1.0);
        out.single("node_selinux_enabled", MetricType::Gauge, enabled_help, &[], 1.0);
        out.single("node_selinux_config_mode", MetricType::Gauge, "Configured SELinux enforcement mode", &[], config);
        out.single("node_selinux_current_mode", MetricType::Gauge, "Current SELinux enforcement mode", &[], current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, Tree};
    use super::*;

    #[test]
    fn off_without_selinuxfs() {
        let t = Tree::new("selinux-off");
        assert_eq!(run(&mut Selinux::new(&t.config())).unwrap(), vec![("node_selinux_enabled{}".to_string(), 0.0)]);
        t.write("sys/fs/selinux/enforce", "1");
        t.write("proc/self/attr/current", "kernel\0");
        assert_eq!(run(&mut Selinux::new(&t.config())).unwrap(), vec![("node_selinux_enabled{}".to_string(), 0.0)]);
    }

    #[test]
    fn modes_when_on() {
        let t = Tree::new("selinux-on");
        t.write("sys/fs/selinux/enforce", "0");
        t.write("proc/self/attr/current", "system_u:system_r:unconfined_t:s0\0");
        t.write("etc/selinux/config", "# SELINUX=disabled\nSELINUX=enforcing\nSELINUXTYPE=targeted\n");
        let got = run(&mut Selinux::new(&t.config())).unwrap();
        assert_eq!(
            got,
            vec![
                ("node_selinux_config_mode{}".to_string(), 1.0),
                ("node_selinux_current_mode{}".to_string(), 0.0),
                ("node_selinux_enabled{}".to_string(), 1.0),
            ]
        );
    }
}
