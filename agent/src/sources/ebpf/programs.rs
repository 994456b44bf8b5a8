//! Every kernel program the agent loads, described once in [`PROGRAMS`]:
//! the loader, the `[ebpf] programs` switches, `vantage_ebpf_program_up`,
//! the status page and the collection all iterate this table, so a new
//! program is a function in agent-ebpf, one row here and its reader.

use aya::Ebpf;

use super::btf::{KernelBtf, Param};
use super::{block, net, sched, Names};
use crate::sample::Family;

/// One program of agent-ebpf as the agent loads, switches and reads it.
pub struct Program {
    /// The `[ebpf] programs` switch, the `program` label of
    /// `vantage_ebpf_program_up` and its row on the status page.
    pub name: &'static str,
    /// The BTF tracepoint (tp_btf) it attaches to.
    pub tracepoint: &'static str,
    /// The functions in the object that can serve it, newest kernel first:
    /// the first that fits the running kernel is loaded.
    pub variants: &'static [Variant],
    /// The maps it writes (a test checks the object has them).
    pub maps: &'static [&'static str],
    /// What turns its data into families. Programs that feed one metric
    /// share its reader, which runs once per collection.
    pub readers: &'static [&'static Reader],
}

/// One function of the object for one kernel prototype.
#[derive(Debug)]
pub struct Variant {
    /// The function's name in the object. Two variants may share a
    /// function and differ in `members` (a global tells it which).
    pub function: &'static str,
    /// Whether the running kernel fits this function: the tracepoint's
    /// arguments (from `btf_trace_<name>`) and struct members. Never a
    /// version number: distributions backport.
    pub fits: fn(&[Param], &KernelBtf) -> bool,
    /// The kernel struct members it reads (at offsets from BTF); a kernel
    /// without one leaves the program unloaded, with the reason, rather
    /// than reading garbage.
    pub members: &'static [(&'static str, &'static str)],
    /// What choosing it changes for the readers (and says so in the log).
    pub chosen: Option<fn(&mut Names)>,
}

/// Reads some maps into families once per collection.
pub struct Reader {
    /// The maps it reads: each is written by a program of the table.
    pub maps: &'static [&'static str],
    pub read: fn(&Ebpf, &mut Names, i64, &mut Vec<Family>) -> Result<(), String>,
}

const TASK_PID: (&str, &str) = ("task_struct", "pid");

/// Whether argument `i` points to `struct strct`.
fn points_to(params: &[Param], i: usize, strct: &str) -> bool {
    matches!(params.get(i), Some(Param::Ptr(s)) if s == strct)
}

/// The fallback variant: the oldest prototype the program supports.
fn any(_: &[Param], _: &KernelBtf) -> bool {
    true
}

/// Whether a request's disk is `request.rq_disk`: kernels before 5.11
/// have no `request_queue.disk`.
pub fn disk_in_request(btf: &KernelBtf) -> bool {
    btf.member_offset("request_queue", "disk").is_err() && btf.member_offset("request", "rq_disk").is_ok()
}

/// The programs, in the order they attach, are listed and read.
pub static PROGRAMS: &[Program] = &[
    Program {
        name: "sched_switch",
        tracepoint: "sched_switch",
        variants: &[
            Variant { function: "sched_switch", fits: |p, _| p.len() >= 4, members: &[TASK_PID], chosen: None },
            // Before 5.18: no prev_state argument; the state is the task's
            // `__state` (`state` before 5.14).
            Variant {
                function: "sched_switch_no_state",
                fits: |_, btf| btf.member_offset("task_struct", "__state").is_ok(),
                members: &[TASK_PID, ("task_struct", "__state")],
                chosen: None,
            },
            Variant {
                function: "sched_switch_no_state",
                fits: any,
                members: &[TASK_PID, ("task_struct", "state")],
                chosen: None,
            },
        ],
        maps: &["CPU_CONTEXT_SWITCHES", "TASK_SLOTS_MAP", "RUNQ_LATENCY", "CGROUP_RUNQ"],
        readers: &[&sched::CONTEXT_SWITCHES, &sched::RUNQ_LATENCY],
    },
    Program {
        name: "sched_wakeup",
        tracepoint: "sched_wakeup",
        variants: &[Variant { function: "sched_wakeup", fits: any, members: &[TASK_PID], chosen: None }],
        maps: &["TASK_SLOTS_MAP"],
        readers: &[&sched::RUNQ_LATENCY],
    },
    Program {
        name: "sched_wakeup_new",
        tracepoint: "sched_wakeup_new",
        variants: &[Variant { function: "sched_wakeup_new", fits: any, members: &[TASK_PID], chosen: None }],
        maps: &["TASK_SLOTS_MAP"],
        readers: &[&sched::RUNQ_LATENCY],
    },
    Program {
        name: "block_rq_issue",
        tracepoint: "block_rq_issue",
        variants: &[
            Variant { function: "block_rq_issue", fits: |p, _| points_to(p, 0, "request"), members: &[], chosen: None },
            // Before 5.11: (struct request_queue *q, struct request *rq).
            Variant {
                function: "block_rq_issue_queue_first",
                fits: |p, _| points_to(p, 1, "request"),
                members: &[],
                chosen: None,
            },
        ],
        maps: &["BLOCK_START"],
        readers: &[&block::BLOCK_IO],
    },
    Program {
        name: "block_rq_complete",
        tracepoint: "block_rq_complete",
        variants: &[
            Variant {
                function: "block_rq_complete",
                fits: |p, btf| points_to(p, 0, "request") && !disk_in_request(btf),
                members: &[
                    ("request", "cmd_flags"),
                    ("gendisk", "major"),
                    ("gendisk", "first_minor"),
                    ("request", "q"),
                    ("request_queue", "disk"),
                ],
                chosen: None,
            },
            // Before 5.11 the disk is the request's own (DISK_IN_REQUEST).
            Variant {
                function: "block_rq_complete",
                fits: |p, btf| points_to(p, 0, "request") && disk_in_request(btf),
                members: &[
                    ("request", "cmd_flags"),
                    ("gendisk", "major"),
                    ("gendisk", "first_minor"),
                    ("request", "rq_disk"),
                ],
                chosen: None,
            },
        ],
        maps: &["BLOCK_START", "BLOCK_IO", "BLOCK_IO_FIRST"],
        readers: &[&block::BLOCK_IO],
    },
    Program {
        name: "tcp_retransmit_skb",
        tracepoint: "tcp_retransmit_skb",
        variants: &[Variant { function: "tcp_retransmit_skb", fits: any, members: &[], chosen: None }],
        maps: &["TCP_COUNTERS", "CGROUP_EVENTS"],
        readers: &[&net::TCP_COUNTERS],
    },
    Program {
        name: "tcp_send_reset",
        tracepoint: "tcp_send_reset",
        variants: &[Variant { function: "tcp_send_reset", fits: any, members: &[], chosen: None }],
        maps: &["TCP_COUNTERS", "CGROUP_EVENTS"],
        readers: &[&net::TCP_COUNTERS],
    },
    Program {
        name: "tcp_receive_reset",
        tracepoint: "tcp_receive_reset",
        variants: &[Variant { function: "tcp_receive_reset", fits: any, members: &[], chosen: None }],
        maps: &["TCP_COUNTERS", "CGROUP_EVENTS"],
        readers: &[&net::TCP_COUNTERS],
    },
    Program {
        name: "inet_sock_set_state",
        tracepoint: "inet_sock_set_state",
        variants: &[Variant {
            function: "inet_sock_set_state",
            fits: any,
            members: &[("sock", "sk_protocol"), ("tcp_sock", "srtt_us")],
            chosen: None,
        }],
        maps: &["TCP_COUNTERS", "TCP_RTT"],
        readers: &[&net::TCP_COUNTERS, &net::TCP_RTT],
    },
    Program {
        name: "kfree_skb",
        tracepoint: "kfree_skb",
        variants: &[
            Variant {
                function: "kfree_skb",
                fits: |p, _| p.get(2) == Some(&Param::Enum("skb_drop_reason".into())),
                members: &[],
                chosen: None,
            },
            // Before 5.17: (struct sk_buff *skb, void *location).
            Variant { function: "kfree_skb_no_reason", fits: any, members: &[], chosen: Some(net::no_drop_reason) },
        ],
        maps: &["SKB_DROPS"],
        readers: &[&net::SKB_DROPS],
    },
];

/// The program named `name` in the table.
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// The program names, for messages and `vantage check`.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROGRAMS.iter().map(|p| p.name)
}

/// The variant of `program` that fits the running kernel, with every
/// member it reads present; otherwise why none does.
pub fn choose(program: &Program, btf: &KernelBtf) -> Result<&'static Variant, String> {
    let tracepoint = program.tracepoint;
    let params = btf.tracepoint(tracepoint).ok_or_else(|| format!("the kernel has no BTF tracepoint {tracepoint}"))?;
    let variant = program.variants.iter().find(|v| (v.fits)(&params, btf)).ok_or_else(|| {
        let functions: Vec<&str> = program.variants.iter().map(|v| v.function).collect();
        format!("{tracepoint}'s prototype {params:?} fits none of {}", functions.join(", "))
    })?;
    let missing: Vec<String> =
        variant.members.iter().filter_map(|(s, m)| btf.member_offset(s, m).err().map(|e| e.to_string())).collect();
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    Ok(variant)
}

/// Every reader of the table once, in table order (the order families
/// are exported in).
pub fn readers() -> Vec<&'static Reader> {
    let mut out: Vec<&'static Reader> = Vec::new();
    for r in PROGRAMS.iter().flat_map(|p| p.readers.iter().copied()) {
        if !out.iter().any(|seen| std::ptr::eq(*seen, r)) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the object's string table holds `name` as a whole symbol.
    fn in_object(name: &str) -> bool {
        let wanted = [&[0u8][..], name.as_bytes(), &[0u8][..]].concat();
        super::super::OBJECT.windows(wanted.len()).any(|w| w == wanted.as_slice())
    }

    #[test]
    fn the_table_names_what_the_object_holds() {
        let mut seen = std::collections::HashSet::new();
        for p in PROGRAMS {
            assert!(seen.insert(p.name), "{} twice in the table", p.name);
            assert!(!p.variants.is_empty(), "{}: no variant", p.name);
            for v in p.variants {
                assert!(in_object(v.function), "{}: function {} not in the object", p.name, v.function);
            }
            for m in p.maps {
                assert!(in_object(m), "{}: map {m} not in the object", p.name);
            }
        }
        for r in readers() {
            for m in r.maps {
                assert!(PROGRAMS.iter().any(|p| p.maps.contains(m)), "map {m} is read but no program writes it");
            }
        }
        assert_eq!(readers().len(), 6, "shared readers run once");
    }

    #[test]
    fn this_kernel_gets_the_newest_variants() {
        // 6.18 has every argument and member the newest prototypes read.
        let btf = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        let function = |p| choose(program(p).unwrap(), &btf).map(|v| v.function);
        assert_eq!(function("sched_switch"), Ok("sched_switch"));
        assert_eq!(function("block_rq_issue"), Ok("block_rq_issue"));
        assert_eq!(function("kfree_skb"), Ok("kfree_skb"));
        assert!(!disk_in_request(&btf));
        for p in PROGRAMS {
            let v = choose(p, &btf).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            for (s, m) in v.members {
                assert!(btf.member_offset(s, m).is_ok(), "{}: {s}.{m}", p.name);
            }
        }
        let unknown = Program { name: "x", tracepoint: "no_such_tracepoint", variants: &[], maps: &[], readers: &[] };
        assert!(choose(&unknown, &btf).unwrap_err().contains("no BTF tracepoint"));
    }
}
