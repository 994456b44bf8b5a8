//! Just enough of a BTF reader to find struct member offsets and enum
//! values in the running kernel's type information (/sys/kernel/btf/vmlinux).
//! The kernel programs get these offsets as globals instead of offsets
//! compiled in from one kernel (aya-ebpf emits no CO-RE relocations).

use std::collections::HashMap;

/// Where the kernel publishes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Where the kernel publishes BTF: its own and its modules'.
pub const BTF_DIR: &str = "/sys/kernel/btf";

/// Why the kernel's BTF could not be read or lacks something.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not BTF or truncated ({what})")]
    Malformed { path: String, what: &'static str },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF has no member {1} in struct {0} (or it is a bitfield)")]
    NoMember(String, String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

const KIND_PTR: u32 = 2;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// A parameter of a tracepoint, as far as the programs care: what it
/// points to, or which enum it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// A pointer to a struct or union of this name.
    Ptr(String),
    /// A value of this enum.
    Enum(String),
    /// Anything else (an integer, a bool, a `void *`).
    Other,
}

/// One BTF blob, read where asked rather than parsed into maps: the blob
/// and one offset per type are all it holds (5.5 MiB and 0.5 MiB for a 6.18
/// kernel), where maps of every struct and member by name took 15 MiB at
/// start-up's peak. It lives only while the eBPF programs load, and the
/// few dozen lookups it answers each scan the types once.
#[derive(Debug)]
pub struct KernelBtf {
    data: Vec<u8>,
    big: bool,
    /// Where the string section starts and ends in `data`.
    strings: (usize, usize),
    /// Index = type id (0 is void, no record): where the record starts in
    /// `data`.
    records: Vec<u32>,
}

/// The common header of a type record, and where its trailing data starts.
#[derive(Clone, Copy, Debug)]
struct Record {
    kind: u32,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
    /// The size or the type it refers to, as the kind says.
    refers: u32,
    /// Offset in `data` of what follows the header (members, values,
    /// parameters).
    extra: usize,
}

impl KernelBtf {
    /// Reads the running kernel's BTF.
    pub fn from_sys() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX).map_err(|source| BtfError::Read { path: VMLINUX.into(), source })?;
        Self::parse(data).map_err(|what| BtfError::Malformed { path: VMLINUX.into(), what })
    }

    /// Checks a BTF blob (little- or big-endian as its magic says) and
    /// indexes its types.
    pub fn parse(data: Vec<u8>) -> Result<Self, &'static str> {
        let big = match data.get(0..2) {
            Some([0x9f, 0xeb]) => false,
            Some([0xeb, 0x9f]) => true,
            _ => return Err("bad magic"),
        };
        let mut btf = KernelBtf { data, big, strings: (0, 0), records: vec![0] };
        let hdr_len = btf.u32_at(4)? as usize;
        let (type_off, type_len) = (btf.u32_at(8)? as usize, btf.u32_at(12)? as usize);
        let (str_off, str_len) = (btf.u32_at(16)? as usize, btf.u32_at(20)? as usize);
        let strings = (hdr_len + str_off, hdr_len + str_off + str_len);
        if strings.1 > btf.data.len() {
            return Err("string section");
        }
        btf.strings = strings;
        let mut at = hdr_len + type_off;
        let end = at + type_len;
        if end > btf.data.len() {
            return Err("type section");
        }
        while at < end {
            btf.records.push(at as u32);
            let r = btf.record_at(at)?;
            at = r.extra
                + match r.kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC => 12 * r.vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * r.vlen,
                    KIND_ENUM64 => 12 * r.vlen,
                    // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
                    // FLOAT, TYPE_TAG: no data after the common header.
                    2 | 7..=12 | 16 | 18 => 0,
                    _ => return Err("unknown type kind"),
                };
        }
        if at != end {
            return Err("type section");
        }
        Ok(btf)
    }

    fn u32_at(&self, at: usize) -> Result<u32, &'static str> {
        let b: [u8; 4] = self.data.get(at..at + 4).ok_or("short read")?.try_into().unwrap();
        Ok(if self.big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// A word the index has already checked is inside `data`.
    fn word(&self, at: usize) -> u32 {
        self.u32_at(at).unwrap_or(0)
    }

    fn record_at(&self, at: usize) -> Result<Record, &'static str> {
        let info = self.u32_at(at + 4)?;
        Ok(Record {
            kind: (info >> 24) & 0x1f,
            name_off: self.u32_at(at)?,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            refers: self.u32_at(at + 8)?,
            extra: at + 12,
        })
    }

    fn record(&self, id: u32) -> Option<Record> {
        let at = *self.records.get(id as usize).filter(|_| id != 0)?;
        self.record_at(at as usize).ok()
    }

    fn name(&self, off: u32) -> &str {
        let (start, end) = self.strings;
        let s = self.data.get(start + off as usize..end).unwrap_or_default();
        let len = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..len]).unwrap_or_default()
    }

    /// The first type of one of `kinds` named `name`, with its id.
    fn named(&self, kinds: &[u32], name: &str) -> Option<(u32, Record)> {
        (1..self.records.len() as u32)
            .filter_map(|id| Some((id, self.record(id)?)))
            .find(|(_, r)| kinds.contains(&r.kind) && r.name_off != 0 && self.name(r.name_off) == name)
    }

    /// The arguments of tracepoint `name` (without the hidden data
    /// pointer), `None` when the kernel has no such BTF tracepoint.
    pub fn tracepoint(&self, name: &str) -> Option<Vec<Param>> {
        // `btf_trace_<name>` is a typedef of a pointer to the prototype,
        // whose first parameter is the probe's `void *` data.
        let (_, typedef) = self.named(&[KIND_TYPEDEF], &format!("btf_trace_{name}"))?;
        let proto = self.record(typedef.refers).filter(|p| p.kind == KIND_PTR)?;
        let proto = self.record(proto.refers).filter(|p| p.kind == KIND_FUNC_PROTO)?;
        Some((1..proto.vlen).map(|i| self.param(self.word(proto.extra + 8 * i + 4))).collect())
    }

    /// The kernel's type id of `btf_trace_<name>`: what a tp_btf program
    /// names as its attach point.
    pub fn tracepoint_type_id(&self, name: &str) -> Option<u32> {
        self.named(&[KIND_TYPEDEF], &format!("btf_trace_{name}")).map(|(id, _)| id)
    }

    /// The type id of kernel function `name` (an fentry attach point).
    pub fn function_type_id(&self, name: &str) -> Option<u32> {
        self.named(&[KIND_FUNC], name).map(|(id, _)| id)
    }

    /// Byte offset of `member` in `strct`, looking through anonymous
    /// structs and unions as C does. Bitfields are refused.
    pub fn member_offset(&self, strct: &str, member: &str) -> Result<u32, BtfError> {
        let (_, record) =
            self.named(&[KIND_STRUCT, KIND_UNION], strct).ok_or_else(|| BtfError::NoStruct(strct.into()))?;
        self.find(record, member, 0, 0)
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(strct.into(), member.into()))
    }

    fn find(&self, strct: Record, wanted: &str, base: u32, depth: u32) -> Option<u32> {
        for i in 0..strct.vlen {
            let at = strct.extra + 12 * i;
            let (name_off, type_id, offset) = (self.word(at), self.word(at + 4), self.word(at + 8));
            let (bit_offset, bitfield) = if strct.kind_flag { (offset & 0xff_ffff, offset >> 24) } else { (offset, 0) };
            if name_off != 0 && self.name(name_off) == wanted {
                return (bitfield == 0).then_some(base + bit_offset);
            }
            if name_off == 0 && depth < 16 {
                let inner =
                    self.record(type_id).filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION) && t.name_off == 0);
                if let Some(found) = inner.and_then(|t| self.find(t, wanted, base + bit_offset, depth + 1)) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The values of a named enum, empty when the kernel has none by that name.
    pub fn enum_values(&self, name: &str) -> Vec<(String, i64)> {
        let Some((_, e)) = self.named(&[KIND_ENUM, KIND_ENUM64], name) else { return Vec::new() };
        (0..e.vlen)
            .map(|i| {
                if e.kind == KIND_ENUM {
                    let at = e.extra + 8 * i;
                    (self.name(self.word(at)).to_string(), self.word(at + 4) as i32 as i64)
                } else {
                    let at = e.extra + 12 * i;
                    let value = ((self.word(at + 8) as u64) << 32 | self.word(at + 4) as u64) as i64;
                    (self.name(self.word(at)).to_string(), value)
                }
            })
            .collect()
    }

    /// Type `id` with typedefs and qualifiers looked through.
    fn strip(&self, mut id: u32) -> Option<Record> {
        for _ in 0..16 {
            let t = self.record(id)?;
            if !is_modifier(t.kind) {
                return Some(t);
            }
            id = t.refers;
        }
        None
    }

    /// What a parameter of type `id` is.
    fn param(&self, id: u32) -> Param {
        match self.strip(id) {
            Some(t) if t.kind == KIND_PTR => match self.strip(t.refers) {
                Some(s) if matches!(s.kind, KIND_STRUCT | KIND_UNION) && s.name_off != 0 => {
                    Param::Ptr(self.name(s.name_off).to_string())
                }
                _ => Param::Other,
            },
            Some(t) if matches!(t.kind, KIND_ENUM | KIND_ENUM64) && t.name_off != 0 => {
                Param::Enum(self.name(t.name_off).to_string())
            }
            _ => Param::Other,
        }
    }
}

fn is_modifier(kind: u32) -> bool {
    matches!(kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG)
}

/// A BTF blob holding only the `btf_trace_<name>` typedefs of
/// `tracepoints` (name, kernel type id), each at its kernel type id, with
/// one-word placeholders before them. aya finds a tp_btf program's attach
/// point by name in the BTF it is given and hands the kernel that type's
/// id, so this is all it needs: parsing the whole of vmlinux with aya costs
/// 18 MiB of peak memory, this about 72 bytes per placeholder.
pub fn attach_blob(tracepoints: &[(&str, u32)]) -> Vec<u8> {
    attach_blob_with(tracepoints, &[])
}

/// [`attach_blob`] with kernel functions too (fentry attach points), each
/// a `FUNC` at its kernel type id: aya looks an fentry's target up by name
/// and kind.
pub fn attach_blob_with(tracepoints: &[(&str, u32)], functions: &[(&str, u32)]) -> Vec<u8> {
    let count = tracepoints.iter().chain(functions).map(|(_, id)| *id).max().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut names = HashMap::new();
    for (name, id) in tracepoints {
        names.insert(*id, (strings.len() as u32, KIND_TYPEDEF));
        strings.extend_from_slice(b"btf_trace_");
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    for (name, id) in functions {
        names.insert(*id, (strings.len() as u32, KIND_FUNC));
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let type_len = count as usize * 12;
    let mut blob = Vec::with_capacity(24 + type_len + strings.len());
    let word = |blob: &mut Vec<u8>, v: u32| blob.extend_from_slice(&v.to_le_bytes());
    blob.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
    for v in [24, 0, type_len as u32, type_len as u32, strings.len() as u32] {
        word(&mut blob, v);
    }
    for id in 1..=count {
        // A typedef where a name is wanted, else an anonymous `void *`.
        let (name_off, kind) = names.get(&id).copied().unwrap_or((0, KIND_PTR));
        word(&mut blob, name_off);
        word(&mut blob, kind << 24);
        word(&mut blob, 0);
    }
    blob.extend_from_slice(&strings);
    blob
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_offsets_in_the_running_kernel() {
        let Ok(btf) = KernelBtf::from_sys() else {
            panic!("this test needs {VMLINUX}");
        };
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        // pid and tgid are adjacent pid_t members in every kernel.
        assert_eq!(tgid, pid + 4);
        assert!(btf.member_offset("task_struct", "no_such_member").is_err());
        let reasons = btf.enum_values("skb_drop_reason");
        assert!(reasons.iter().any(|(n, v)| n == "SKB_DROP_REASON_NOT_SPECIFIED" && *v == 2), "{reasons:?}");
        // A nested struct's member is found too.
        assert!(btf.member_offset("sock", "sk_protocol").is_ok());
        assert!(btf.member_offset("sock_cgroup_data", "cgroup").is_ok());
        // This kernel's prototypes (6.18): what the loader decides from.
        let ptr = |s: &str| Param::Ptr(s.into());
        assert_eq!(btf.tracepoint("block_rq_issue").unwrap(), &[ptr("request")]);
        let switch = btf.tracepoint("sched_switch").unwrap();
        assert_eq!(switch.len(), 4, "{switch:?}");
        assert_eq!(&switch[1..3], &[ptr("task_struct"), ptr("task_struct")]);
        let kfree = btf.tracepoint("kfree_skb").unwrap();
        assert_eq!(&kfree[..3], &[ptr("sk_buff"), Param::Other, Param::Enum("skb_drop_reason".into())]);
        assert!(btf.tracepoint("no_such_tracepoint").is_none());
    }

    #[test]
    fn the_attach_blob_puts_each_tracepoint_where_the_kernel_has_it() {
        let kernel = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        let full = aya::Btf::from_sys_fs().expect("aya reads the kernel's BTF");
        let names = ["sched_switch", "block_rq_issue", "kfree_skb", "inet_sock_set_state"];
        let ids: Vec<(&str, u32)> = names.iter().map(|n| (*n, kernel.tracepoint_type_id(n).unwrap())).collect();
        let blob = aya::Btf::parse(&attach_blob(&ids), aya::Endianness::Little).expect("the blob is BTF");
        for (name, _) in &ids {
            let typedef = format!("btf_trace_{name}");
            let kind = aya_obj::btf::BtfKind::Typedef;
            // The same id aya finds in the kernel's own BTF.
            assert_eq!(
                blob.id_by_type_name_kind(&typedef, kind).unwrap(),
                full.id_by_type_name_kind(&typedef, kind).unwrap(),
                "{typedef}"
            );
        }
        assert!(blob.id_by_type_name_kind("btf_trace_sched_wakeup", aya_obj::btf::BtfKind::Typedef).is_err());

        // A function (fentry) at its own id, beside the tracepoints.
        let func = kernel.function_type_id("commit_creds").expect("commit_creds in the kernel's BTF");
        let blob = aya::Btf::parse(&attach_blob_with(&ids, &[("commit_creds", func)]), aya::Endianness::Little)
            .expect("the blob is BTF");
        let kind = aya_obj::btf::BtfKind::Func;
        assert_eq!(blob.id_by_type_name_kind("commit_creds", kind).unwrap(), func);
        assert_eq!(full.id_by_type_name_kind("commit_creds", kind).unwrap(), func);
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert_eq!(KernelBtf::parse(b"\x7fELF....".to_vec()).unwrap_err(), "bad magic");
        // The right magic but sections pointing past the end.
        let mut short = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        short.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(KernelBtf::parse(short).is_err());
    }
}
