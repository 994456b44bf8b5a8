//! The security object (agent-ebpf's `agent-security`): loading it with
//! the kinds and rate limit `[security]` asks for, and decoding the records
//! of its ring buffer. What becomes of an event (container, expectations,
//! log line) is the `[security]` source's (`crate::logs::security`).

use std::path::Path;

use agent_common::{
    CredEvent, ExecEvent, SecurityHeader, SockEvent, SECURITY_ACCEPT, SECURITY_CONNECT, SECURITY_CREDENTIALS,
    SECURITY_DROP_REASONS, SECURITY_EXEC, SECURITY_KINDS, SECURITY_LISTEN, SECURITY_VIA_EXEC,
};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FEntry};
use aya::{Btf, Ebpf, EbpfLoader};

use super::btf::{self, KernelBtf};
use crate::status::Registry;

/// The security object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-security"));

/// Event kinds by their `SECURITY_*` number, as `kind` labels name them.
pub const KIND_NAMES: [&str; SECURITY_KINDS as usize] = ["exec", "connect", "accept", "listen", "credentials"];

/// Reasons by their `SECURITY_DROP_*` number.
pub const DROP_REASONS: [&str; SECURITY_DROP_REASONS as usize] = ["rate_limit", "ring_full"];

/// One program of the object: its `vantage_ebpf_program_up` name, the
/// hook, the kinds it sends and the members it reads.
struct Hook {
    program: &'static str,
    attach: Attach,
    kinds: &'static [u32],
    members: &'static [(&'static str, &'static str)],
    /// A program this one stands in for: attached only when that one
    /// could not be (both attached would send each event twice).
    instead_of: Option<&'static str>,
}

enum Attach {
    Tracepoint(&'static str),
    Fentry(&'static str),
}

const HOOKS: &[Hook] = &[
    Hook {
        program: "security_exec",
        attach: Attach::Tracepoint("sched_process_exec"),
        kinds: &[SECURITY_EXEC],
        members: &[
            ("task_struct", "tgid"),
            ("task_struct", "real_parent"),
            ("task_struct", "mm"),
            ("mm_struct", "arg_start"),
            ("mm_struct", "arg_end"),
            ("linux_binprm", "filename"),
        ],
        instead_of: None,
    },
    Hook {
        program: "security_sock",
        attach: Attach::Tracepoint("inet_sock_set_state"),
        kinds: &[SECURITY_CONNECT, SECURITY_ACCEPT, SECURITY_LISTEN],
        members: &[
            ("sock", "sk_protocol"),
            ("sock", "__sk_common"),
            ("sock_common", "skc_family"),
            ("sock_common", "skc_num"),
            ("sock_common", "skc_dport"),
            ("sock_common", "skc_rcv_saddr"),
            ("sock_common", "skc_daddr"),
            ("sock_common", "skc_v6_rcv_saddr"),
            ("sock_common", "skc_v6_daddr"),
        ],
        instead_of: None,
    },
    Hook {
        program: "security_creds",
        attach: Attach::Fentry("commit_creds"),
        kinds: &[SECURITY_CREDENTIALS],
        members: &[
            ("task_struct", "cred"),
            ("cred", "uid"),
            ("cred", "euid"),
            ("cred", "gid"),
            ("cred", "egid"),
            ("cred", "cap_effective"),
        ],
        instead_of: None,
    },
    // Some kernels refuse fentry (this project's CI host answers EPERM
    // before verifying): there, a set-ID or file-capability exec is still
    // seen, though a setuid() call or an exploit's commit_creds is not.
    Hook {
        program: "security_exec_creds",
        attach: Attach::Tracepoint("sched_process_exec"),
        kinds: &[SECURITY_CREDENTIALS],
        members: &[
            ("task_struct", "cred"),
            ("task_struct", "tgid"),
            ("task_struct", "real_parent"),
            ("cred", "uid"),
            ("cred", "euid"),
            ("cred", "gid"),
            ("cred", "egid"),
            ("cred", "cap_effective"),
        ],
        instead_of: Some("security_creds"),
    },
];

/// The program names, for `vantage check` and the kernel table.
pub fn program_names() -> impl Iterator<Item = &'static str> {
    HOOKS.iter().map(|h| h.program)
}

/// What loading asks for.
pub struct Settings {
    /// Bit `1 << kind` per wanted kind.
    pub kinds: u32,
    /// Events per second per cgroup, 0 for none.
    pub rate_limit: u32,
    /// Ring buffer bytes: a power of two, at least a page.
    pub ring_buffer_size: u32,
}

/// The loaded object: its ring buffer and drop counters.
pub struct Loaded {
    /// Owns the programs and their links: dropping it detaches them.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
}

/// Events not sent by (kind, reason), summed over CPUs.
pub fn read_drops(drops: &PerCpuArray<MapData, u64>) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    for kind in 0..SECURITY_KINDS {
        for reason in 0..SECURITY_DROP_REASONS {
            let index = kind * SECURITY_DROP_REASONS + reason;
            let n = drops.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0);
            out.push((kind as usize, reason as usize, n));
        }
    }
    out
}

/// Loads the programs the wanted kinds need and attaches them; each
/// program's state goes to `registry`. Fails only when none can run.
pub fn load(settings: &Settings, registry: &Registry) -> Result<Loaded, String> {
    super::raise_memlock_limit();
    let kernel_btf = KernelBtf::from_sys().map_err(|e| e.to_string())?;
    let offsets = super::kernel_offsets(&kernel_btf);
    let sock_cgroup: u32 = super::CGROUP_MEMBERS.iter().all(|(s, m)| kernel_btf.member_offset(s, m).is_ok()).into();
    // Per hook: whether it is wanted and, if so, what stops it.
    let plans: Vec<(&Hook, Option<Result<u32, String>>)> = HOOKS
        .iter()
        .map(|h| {
            if !h.kinds.iter().any(|k| settings.kinds & (1 << k) != 0) {
                return (h, None);
            }
            let missing: Vec<String> = h
                .members
                .iter()
                .filter_map(|(s, m)| kernel_btf.member_offset(s, m).err().map(|e| e.to_string()))
                .collect();
            let id = match h.attach {
                Attach::Tracepoint(t) => {
                    kernel_btf.tracepoint_type_id(t).ok_or_else(|| format!("the kernel has no BTF tracepoint {t}"))
                }
                Attach::Fentry(f) => kernel_btf
                    .function_type_id(f)
                    .ok_or_else(|| format!("the kernel's BTF has no function {f} (fentry)")),
            };
            let plan = if missing.is_empty() { id } else { Err(missing.join("; ")) };
            (h, Some(plan))
        })
        .collect();
    drop(kernel_btf);
    let (mut tracepoints, mut functions) = (Vec::new(), Vec::new());
    for (h, plan) in &plans {
        if let Some(Ok(id)) = plan {
            match h.attach {
                Attach::Tracepoint(t) => tracepoints.push((t, *id)),
                Attach::Fentry(f) => functions.push((f, *id)),
            }
        }
    }
    let (loaded, _) = super::landlock::without_reading(Path::new(btf::BTF_DIR), || {
        EbpfLoader::new()
            .btf(None)
            .map_max_entries("SECURITY_EVENTS", settings.ring_buffer_size)
            .override_global("OFFSETS", &offsets, true)
            .override_global("SECURITY_SWITCHES", &settings.kinds, true)
            .override_global("SECURITY_RATE_LIMIT", &settings.rate_limit, true)
            .override_global("SECURITY_WAKE_BYTES", &(settings.ring_buffer_size / 4), true)
            .override_global("SOCK_CGROUP", &sock_cgroup, true)
            .load(OBJECT)
    });
    let mut ebpf = loaded.map_err(|e| crate::errors::chain(&e))?;
    let attach_btf = Btf::parse(&btf::attach_blob_with(&tracepoints, &functions), aya::Endianness::default())
        .map_err(|e| format!("building the attach points' BTF: {}", crate::errors::chain(&e)))?;
    let mut attached = Vec::new();
    for (h, plan) in plans {
        // A program no kind wants, or whose stand-in role is not needed,
        // is not reported at all: down is for what should run and cannot
        // (VantageEbpfProgramDown alerts on it).
        let result = match plan {
            None => continue,
            Some(_) if h.instead_of.is_some_and(|p| attached.contains(&p)) => continue,
            Some(plan) => plan.and_then(|_| attach(&mut ebpf, h, &attach_btf)),
        };
        match result {
            Ok(()) => {
                attached.push(h.program);
                registry.set_program(h.program, true, String::new());
            }
            Err(reason) => {
                tracing::warn!(program = h.program, error = %reason, "security program not attached");
                registry.set_program(h.program, false, reason);
            }
        }
    }
    if attached.is_empty() {
        return Err("no security program could be attached".into());
    }
    let events = ebpf.take_map("SECURITY_EVENTS").ok_or("SECURITY_EVENTS missing from the object")?;
    let events = RingBuf::try_from(events).map_err(|e| format!("SECURITY_EVENTS: {e}"))?;
    let drops = ebpf.take_map("SECURITY_DROPS").ok_or("SECURITY_DROPS missing from the object")?;
    let drops = PerCpuArray::try_from(drops).map_err(|e| format!("SECURITY_DROPS: {e}"))?;
    tracing::info!(attached = attached.len(), "security programs attached");
    Ok(Loaded { ebpf, events, drops })
}

fn attach(ebpf: &mut Ebpf, hook: &Hook, btf: &Btf) -> Result<(), String> {
    let program =
        ebpf.program_mut(hook.program).ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    match hook.attach {
        Attach::Tracepoint(t) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e:#}"))?;
            p.load(t, btf).map_err(|e| super::load_error(&e))?;
            p.attach().map(|_| ()).map_err(|e| format!("attach: {}", crate::errors::chain(&e)))
        }
        Attach::Fentry(f) => {
            let p: &mut FEntry = program.try_into().map_err(|e| format!("{e:#}"))?;
            p.load(f, btf).map_err(|e| super::load_error(&e))?;
            p.attach().map(|_| ()).map_err(|e| format!("attach: {}", crate::errors::chain(&e)))
        }
    }
}

/// One decoded event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup: u64,
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub boot_ns: u64,
    pub comm: String,
    pub detail: Detail,
}

/// What each kind adds.
#[derive(Clone, Debug, PartialEq)]
pub enum Detail {
    Exec {
        filename: String,
        args: Vec<String>,
        /// Whether the process has more argument bytes than were read.
        args_truncated: bool,
    },
    Sock {
        source: std::net::SocketAddr,
        destination: std::net::SocketAddr,
        /// A listening socket closed.
        closed: bool,
    },
    Credentials {
        old_euid: u32,
        old_egid: u32,
        new_uid: u32,
        new_euid: u32,
        new_gid: u32,
        new_egid: u32,
        old_caps: u64,
        new_caps: u64,
        /// Seen at exec (`security_exec_creds`): the old effective ids
        /// and capabilities are unknown.
        at_exec: bool,
    },
}

/// Reads a `T` from the start of `bytes` (records are not aligned for it).
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    // SAFETY: length checked; T is a repr(C) plain-old-data record that
    // every bit pattern is valid for, read unaligned.
    (bytes.len() >= std::mem::size_of::<T>()).then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// The text up to the first NUL.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Decodes one ring buffer record; None for one too short for its kind
/// or of a kind this agent does not know.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    let h: SecurityHeader = read(bytes)?;
    let detail = match h.kind {
        SECURITY_EXEC => {
            let e: ExecEvent = read(bytes)?;
            let len = (e.args_len as usize).min(e.args.len());
            let mut args: Vec<String> =
                e.args[..len].split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            // cmdline ends in a NUL: no empty last argument.
            if e.args[..len].last() == Some(&0) {
                args.pop();
            }
            Detail::Exec { filename: c_string(&e.filename), args, args_truncated: e.args_total > e.args_len }
        }
        SECURITY_CONNECT | SECURITY_ACCEPT | SECURITY_LISTEN => {
            let e: SockEvent = read(bytes)?;
            let addr = |raw: [u8; 16], port: u16| -> std::net::SocketAddr {
                if e.family == 10 {
                    (std::net::Ipv6Addr::from(raw), port).into()
                } else {
                    (std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]), port).into()
                }
            };
            Detail::Sock { source: addr(e.saddr, e.sport), destination: addr(e.daddr, e.dport), closed: e.closed != 0 }
        }
        SECURITY_CREDENTIALS => {
            let e: CredEvent = read(bytes)?;
            Detail::Credentials {
                old_euid: e.old_euid,
                old_egid: e.old_egid,
                new_uid: e.new_uid,
                new_euid: e.new_euid,
                new_gid: e.new_gid,
                new_egid: e.new_egid,
                old_caps: e.old_caps,
                new_caps: e.new_caps,
                at_exec: e.via == SECURITY_VIA_EXEC,
            }
        }
        _ => return None,
    };
    Some(Event {
        kind: h.kind,
        pid: h.pid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        cgroup: h.cgroup,
        boot_ns: h.boot_ns,
        comm: c_string(&h.comm),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::SECURITY_VIA_COMMIT_CREDS;

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading a repr(C) value's bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()).to_vec() }
    }

    fn header(kind: u32) -> SecurityHeader {
        let mut comm = [0u8; 16];
        comm[..2].copy_from_slice(b"sh");
        SecurityHeader { kind, pid: 7, ppid: 1, uid: 1000, gid: 100, _pad: 0, cgroup: 42, boot_ns: 5, comm }
    }

    #[test]
    fn decodes_each_kind_as_the_programs_write_it() {
        let mut e = ExecEvent {
            header: header(SECURITY_EXEC),
            args_len: 0,
            args_total: 0,
            filename: [0; agent_common::SECURITY_FILENAME_LEN],
            args: [0xff; agent_common::SECURITY_ARGS_LEN],
        };
        e.filename[..7].copy_from_slice(b"/bin/sh");
        let cmdline = b"sh\0-c\0echo hi\0";
        e.args[..cmdline.len()].copy_from_slice(cmdline);
        e.args_len = cmdline.len() as u32;
        e.args_total = cmdline.len() as u32;
        let got = decode(&bytes(&e)).unwrap();
        assert_eq!((got.pid, got.ppid, got.uid, got.gid, got.cgroup, got.comm.as_str()), (7, 1, 1000, 100, 42, "sh"));
        assert_eq!(
            got.detail,
            Detail::Exec {
                filename: "/bin/sh".into(),
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                args_truncated: false
            }
        );
        // More arguments than fit: cut, and said so.
        e.args_len = 4;
        e.args_total = 4000;
        let Detail::Exec { args, args_truncated, .. } = decode(&bytes(&e)).unwrap().detail else { panic!() };
        assert_eq!((args, args_truncated), (vec!["sh".to_string(), "-".to_string()], true));

        let mut s = SockEvent {
            header: header(SECURITY_CONNECT),
            family: 2,
            sport: 0,
            dport: 5432,
            closed: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        s.saddr[..4].copy_from_slice(&[172, 17, 0, 2]);
        s.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let Detail::Sock { source, destination, closed } = decode(&bytes(&s)).unwrap().detail else { panic!() };
        assert_eq!(
            (source.to_string(), destination.to_string(), closed),
            ("172.17.0.2:0".into(), "127.0.0.1:5432".into(), false)
        );
        s.family = 10;
        s.daddr = std::net::Ipv6Addr::LOCALHOST.octets();
        let Detail::Sock { destination, .. } = decode(&bytes(&s)).unwrap().detail else { panic!() };
        assert_eq!(destination.to_string(), "[::1]:5432");

        let c = CredEvent {
            header: header(SECURITY_CREDENTIALS),
            old_euid: 1000,
            old_egid: 100,
            new_uid: 1000,
            new_euid: 0,
            new_gid: 100,
            new_egid: 100,
            via: SECURITY_VIA_COMMIT_CREDS,
            _pad: 0,
            old_caps: 0,
            new_caps: 0x1ff_ffff_ffff,
        };
        let Detail::Credentials { new_euid, old_euid, at_exec, .. } = decode(&bytes(&c)).unwrap().detail else {
            panic!()
        };
        assert_eq!((old_euid, new_euid, at_exec), (1000, 0, false));
        let at_exec = CredEvent { via: SECURITY_VIA_EXEC, ..c };
        let Detail::Credentials { at_exec, .. } = decode(&bytes(&at_exec)).unwrap().detail else { panic!() };
        assert!(at_exec);

        // Short or unknown records are refused, not misread.
        assert_eq!(decode(&bytes(&c)[..40]), None);
        assert_eq!(decode(&bytes(&header(99))), None);
    }
}
