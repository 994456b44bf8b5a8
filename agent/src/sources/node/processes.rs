//! `processes` (off by default, as in node_exporter): processes and
//! threads by state from /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat,
//! with the kernel's PID and thread limits.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `processes` collector.
pub(super) struct Processes {
    proc: PathBuf,
    buf: Vec<u8>,
}

impl Processes {
    pub fn new(c: &NodeConfig) -> Self {
        Processes { proc: c.proc_path.clone(), buf: Vec::with_capacity(512) }
    }
}

/// Counts per one-letter state, in first-seen order.
#[derive(Default)]
struct States(Vec<(String, u64)>);

impl States {
    fn bump(&mut self, state: &str) {
        match self.0.iter_mut().find(|(s, _)| s == state) {
            Some((_, n)) => *n += 1,
            None => self.0.push((state.to_string(), 1)),
        }
    }
}

/// A process or thread vanishing between the listing and the read is
/// not an error (ENOENT, ESRCH).
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Numeric entries of a /proc-like directory; None when it is absent.
fn pids(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut v: Vec<u32> =
        std::fs::read_dir(dir)?.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
    v.sort_unstable();
    Ok(v)
}

impl Processes {
    /// (state, threads) of a stat file; None if the task has gone.
    fn stat(&mut self, path: &str) -> Result<Option<(String, u64)>, NodeError> {
        self.buf.clear();
        let read = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut self.buf));
        match read {
            Ok(_) => {}
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(NodeError::read(Path::new(path), e)),
        }
        let text = String::from_utf8_lossy(&self.buf);
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let bad = || NodeError::parse(Path::new(path), "malformed stat line");
        let rest = text.rfind(')').map(|i| &text[i + 1..]).ok_or_else(bad)?;
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        if f.len() < 18 {
            return Err(bad());
        }
        let threads = f[17].parse::<u64>().map_err(|_| bad())?;
        Ok(Some((f[0].to_string(), threads)))
    }

    fn read_limit(&self, rel: &str) -> Result<f64, NodeError> {
        let p = self.proc.join(rel);
        let text = std::fs::read_to_string(&p).map_err(|e| NodeError::read(&p, e))?;
        let t = text.trim();
        t.parse::<u64>().map(|v| v as f64).map_err(|_| NodeError::parse(&p, format!("bad number {t:?}")))
    }
}

impl Sub for Processes {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let list = pids(&self.proc).map_err(|e| NodeError::read(&self.proc, e))?;
        let (mut count, mut threads) = (0u64, 0u64);
        let (mut states, mut thread_states) = (States::default(), States::default());
        let base = self.proc.display().to_string();
        for pid in list {
            let Some((state, n)) = self.stat(&format!("{base}/{pid}/stat"))? else { continue };
            count += 1;
            threads += n;
            states.bump(&state);
            let task_dir = PathBuf::from(format!("{base}/{pid}/task"));
            let tids = match pids(&task_dir) {
                Ok(t) => t,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(NodeError::read(&task_dir, e)),
            };
            for tid in tids {
                if tid == pid {
                    thread_states.bump(&state);
                    continue;
                }
                let path = format!("{base}/{pid}/task/{tid}/stat");
                if let Some((s, _)) = self.stat(&path)? {
                    thread_states.bump(&s);
                }
            }
        }
        let g = MetricType::Gauge;
        out.single("node_processes_threads", g, "Allocated threads in system", &[], threads as f64);
        let max_threads = self.read_limit("sys/kernel/threads-max")?;
        out.single("node_processes_max_threads", g, "Limit of threads in the system", &[], max_threads);
        if !states.0.is_empty() {
            out.family("node_processes_state", g, "Number of processes in each state.");
            for (s, n) in &states.0 {
                out.add(&[("state", s)], *n as f64);
            }
        }
        if !thread_states.0.is_empty() {
            out.family("node_processes_threads_state", g, "Number of threads in each state.");
            for (s, n) in &thread_states.0 {
                out.add(&[("thread_state", s)], *n as f64);
            }
        }
        let pid_max = self.read_limit("sys/kernel/pid_max")?;
        out.single("node_processes_pids", g, "Number of PIDs", &[], count as f64);
        out.single("node_processes_max_processes", g, "Number of max PIDs limit", &[], pid_max);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    fn stat(pid: u32, comm: &str, state: &str, threads: u32) -> String {
        format!("{pid} ({comm}) {state} 1 1 1 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 {threads} 0 100 1000 200\n")
    }

    #[test]
    fn states_threads_and_limits() {
        let t = Tree::new("procs");
        t.write("proc/1/stat", &stat(1, "systemd", "S", 1));
        t.write("proc/1/task/1/stat", &stat(1, "systemd", "S", 1));
        t.write("proc/20/stat", &stat(20, "a (b) c", "R", 2));
        t.write("proc/20/task/20/stat", &stat(20, "a (b) c", "R", 2));
        t.write("proc/20/task/21/stat", &stat(21, "worker", "D", 2));
        // No task directory (as in node_exporter's fixtures): threads not counted by state.
        t.write("proc/30/stat", &stat(30, "kworker/0:1", "I", 1));
        t.write("proc/self/stat", "not a pid\n");
        t.write("proc/sys/kernel/threads-max", "7801\n");
        t.write("proc/sys/kernel/pid_max", "123\n");
        let got = run(&mut Processes::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_processes_pids{}"), 3.0);
        assert_eq!(value(&got, "node_processes_threads{}"), 4.0);
        assert_eq!(value(&got, "node_processes_max_threads{}"), 7801.0);
        assert_eq!(value(&got, "node_processes_max_processes{}"), 123.0);
        assert_eq!(value(&got, "node_processes_state{state=\"R\"}"), 1.0);
        assert_eq!(value(&got, "node_processes_state{state=\"I\"}"), 1.0);
        assert_eq!(value(&got, "node_processes_threads_state{thread_state=\"D\"}"), 1.0);
        assert_eq!(value(&got, "node_processes_threads_state{thread_state=\"S\"}"), 1.0);
        assert_eq!(got.len(), 4 + 3 + 3, "{got:#?}");
        t.write("proc/30/stat", "30 (x) S 1\n");
        assert!(run(&mut Processes::new(&t.config())).unwrap_err().to_string().contains("30/stat"));
    }
}
