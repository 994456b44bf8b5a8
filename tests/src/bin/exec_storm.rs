//! The security tests' fork storm: `exec_storm <cgroup dir> <program>
//! <count> <threads>` joins the cgroup v2 directory, then starts `count`
//! copies of `program` from `threads` threads, each waiting for its child,
//! as fast as this machine forks. A cgroup of its own keeps the test's
//! other processes out of the storm's rate-limit window.

use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, cgroup, program, count, threads] = &args[..] else {
        eprintln!("usage: exec_storm <cgroup dir> <program> <count> <threads>");
        exit(2);
    };
    let (Ok(count), Ok(threads)) = (count.parse::<u64>(), threads.parse::<u64>()) else {
        eprintln!("exec_storm: count {count:?} and threads {threads:?} must be whole numbers");
        exit(2);
    };
    // "0" moves the writer; done before any thread exists, so all of them.
    if let Err(e) = std::fs::write(format!("{cgroup}/cgroup.procs"), "0") {
        eprintln!("exec_storm: joining {cgroup}: {e}");
        exit(1);
    }
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let program = program.clone();
            let share = count / threads + u64::from(t < count % threads);
            std::thread::spawn(move || {
                for _ in 0..share {
                    // No pre-exec hook and inherited stdio: std uses
                    // posix_spawn (a vfork), the cheapest start there is.
                    match Command::new(&program).status() {
                        Ok(s) if s.success() => {}
                        other => {
                            eprintln!("exec_storm: {program}: {other:?}");
                            exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("storm thread");
    }
}
