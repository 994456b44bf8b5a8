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
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// A member of a struct or union: name, type id, bit offset, bitfield size.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
    bitfield: u32,
}

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

/// The structs, unions, enums and tracepoint prototypes of one BTF blob,
/// by name.
#[derive(Debug, Default)]
pub struct KernelBtf {
    /// Struct or union name -> members (first definition wins).
    structs: HashMap<String, Vec<Member>>,
    /// Anonymous structs and unions by type id, to look through them.
    anonymous: HashMap<u32, Vec<Member>>,
    /// Enum name -> (value name, value).
    enums: HashMap<String, Vec<(String, i64)>>,
    /// Tracepoint name -> the type id of its `btf_trace_<name>` typedef
    /// and its arguments (from the typedef: a pointer to the prototype
    /// whose first, hidden parameter is the probe's `void *` data, left
    /// out here).
    tracepoints: HashMap<String, (u32, Vec<Param>)>,
}

/// What the prototype pass needs of every type: kind, name, the type it
/// refers to, and for a prototype where its parameters' types are in the
/// shared list (20 bytes a type: the pass is short-lived, but the kernel
/// has 100,000 types or more).
#[derive(Clone, Copy, Default)]
struct Raw {
    kind: u32,
    name_off: u32,
    refers: u32,
    params_at: u32,
    params_len: u32,
}

const KIND_PTR: u32 = 2;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

impl KernelBtf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX).map_err(|source| BtfError::Read { path: VMLINUX.into(), source })?;
        Self::parse(&data).map_err(|what| BtfError::Malformed { path: VMLINUX.into(), what })
    }

    /// Parses a BTF blob (little- or big-endian as its magic says).
    pub fn parse(data: &[u8]) -> Result<Self, &'static str> {
        let big = match data.get(0..2) {
            Some([0x9f, 0xeb]) => false,
            Some([0xeb, 0x9f]) => true,
            _ => return Err("bad magic"),
        };
        let u32_at = |at: usize| -> Result<u32, &'static str> {
            let b: [u8; 4] = data.get(at..at + 4).ok_or("short read")?.try_into().unwrap();
            Ok(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
        };
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types = hdr_len + type_off;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or("string section")?;
        let name = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let mut out = KernelBtf::default();
        // Index = type id (0 is void); only kinds the prototype pass follows
        // keep more than their kind.
        let mut raw: Vec<Raw> = vec![Raw::default()];
        let mut param_types: Vec<u32> = Vec::new();
        let mut at = types;
        let end = types + type_len;
        let mut id = 1u32;
        while at < end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let refers = u32_at(at + 8)?;
            let mut entry = Raw { kind, name_off, refers, ..Raw::default() };
            at += 12;
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let offset = u32_at(at + 8)?;
                        let (bit_offset, bitfield) =
                            if kind_flag { (offset & 0xff_ffff, offset >> 24) } else { (offset, 0) };
                        members.push(Member {
                            name: name(u32_at(at)?),
                            type_id: u32_at(at + 4)?,
                            bit_offset,
                            bitfield,
                        });
                        at += 12;
                    }
                    if name_off == 0 {
                        out.anonymous.insert(id, members);
                    } else {
                        out.structs.entry(name(name_off)).or_insert(members);
                    }
                }
                KIND_ENUM | KIND_ENUM64 => {
                    let width = if kind == KIND_ENUM { 8 } else { 12 };
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let value = if kind == KIND_ENUM {
                            u32_at(at + 4)? as i32 as i64
                        } else {
                            ((u32_at(at + 8)? as u64) << 32 | u32_at(at + 4)? as u64) as i64
                        };
                        values.push((name(u32_at(at)?), value));
                        at += width;
                    }
                    if name_off != 0 {
                        out.enums.entry(name(name_off)).or_insert(values);
                    }
                }
                KIND_FUNC_PROTO => {
                    entry.params_at = param_types.len() as u32;
                    entry.params_len = vlen as u32;
                    for i in 0..vlen {
                        param_types.push(u32_at(at + 8 * i + 4)?);
                    }
                    at += 8 * vlen;
                }
                KIND_DATASEC => at += 12 * vlen,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT,
                // TYPE_TAG: no data after the common header.
                2 | 7..=12 | 16 | 18 => {}
                _ => return Err("unknown type kind"),
            }
            if !matches!(
                kind,
                KIND_PTR | KIND_TYPEDEF | KIND_FUNC_PROTO | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64
            ) && !is_modifier(kind)
            {
                entry = Raw { kind, ..Raw::default() };
            }
            raw.push(entry);
            id += 1;
        }
        for (id, t) in raw.iter().enumerate() {
            if t.kind != KIND_TYPEDEF {
                continue;
            }
            let typedef = name(t.name_off);
            let Some(tracepoint) = typedef.strip_prefix("btf_trace_") else { continue };
            let proto =
                raw.get(t.refers as usize).filter(|p| p.kind == KIND_PTR).and_then(|p| raw.get(p.refers as usize));
            let Some(proto) = proto.filter(|p| p.kind == KIND_FUNC_PROTO) else { continue };
            let ids = &param_types[proto.params_at as usize..(proto.params_at + proto.params_len) as usize];
            let params = ids.iter().skip(1).map(|&id| param(&raw, id, &name)).collect();
            out.tracepoints.insert(tracepoint.to_string(), (id as u32, params));
        }
        Ok(out)
    }

    /// The arguments of tracepoint `name` (without the hidden data
    /// pointer), `None` when the kernel has no such BTF tracepoint.
    pub fn tracepoint(&self, name: &str) -> Option<&[Param]> {
        self.tracepoints.get(name).map(|(_, params)| params.as_slice())
    }

    /// The kernel's type id of `btf_trace_<name>`: what a tp_btf program
    /// names as its attach point.
    pub fn tracepoint_type_id(&self, name: &str) -> Option<u32> {
        self.tracepoints.get(name).map(|(id, _)| *id)
    }

    /// Byte offset of `member` in `strct`, looking through anonymous
    /// structs and unions as C does. Bitfields are refused.
    pub fn member_offset(&self, strct: &str, member: &str) -> Result<u32, BtfError> {
        let members = self.structs.get(strct).ok_or_else(|| BtfError::NoStruct(strct.into()))?;
        self.find(members, member, 0)
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(strct.into(), member.into()))
    }

    fn find(&self, members: &[Member], wanted: &str, base: u32) -> Option<u32> {
        for m in members {
            if m.name == wanted {
                return (m.bitfield == 0).then_some(base + m.bit_offset);
            }
            if m.name.is_empty() {
                if let Some(inner) = self.anonymous.get(&m.type_id) {
                    if let Some(found) = self.find(inner, wanted, base + m.bit_offset) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// The values of a named enum, empty when the kernel has none by that name.
    pub fn enum_values(&self, name: &str) -> &[(String, i64)] {
        self.enums.get(name).map(Vec::as_slice).unwrap_or_default()
    }
}

/// A BTF blob holding only the `btf_trace_<name>` typedefs of
/// `tracepoints` (name, kernel type id), each at its kernel type id, with
/// one-word placeholders before them. aya finds a tp_btf program's attach
/// point by name in the BTF it is given and hands the kernel that type's
/// id, so this is all it needs: parsing the whole of vmlinux with aya costs
/// 18 MiB of peak memory, this about 72 bytes per placeholder.
pub fn attach_blob(tracepoints: &[(&str, u32)]) -> Vec<u8> {
    let count = tracepoints.iter().map(|(_, id)| *id).max().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut names = HashMap::new();
    for (name, id) in tracepoints {
        names.insert(*id, strings.len() as u32);
        strings.extend_from_slice(b"btf_trace_");
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
        let (name_off, kind) = match names.get(&id) {
            Some(off) => (*off, KIND_TYPEDEF),
            None => (0, KIND_PTR),
        };
        word(&mut blob, name_off);
        word(&mut blob, kind << 24);
        word(&mut blob, 0);
    }
    blob.extend_from_slice(&strings);
    blob
}

fn is_modifier(kind: u32) -> bool {
    matches!(kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG)
}

/// Type `id` with typedefs and qualifiers looked through.
fn strip(raw: &[Raw], mut id: u32) -> Option<&Raw> {
    for _ in 0..16 {
        let t = raw.get(id as usize)?;
        if !is_modifier(t.kind) {
            return Some(t);
        }
        id = t.refers;
    }
    None
}

/// What a parameter of type `id` is.
fn param(raw: &[Raw], id: u32, name: &impl Fn(u32) -> String) -> Param {
    match strip(raw, id) {
        Some(t) if t.kind == KIND_PTR => match strip(raw, t.refers) {
            Some(s) if matches!(s.kind, KIND_STRUCT | KIND_UNION) && s.name_off != 0 => Param::Ptr(name(s.name_off)),
            _ => Param::Other,
        },
        Some(t) if matches!(t.kind, KIND_ENUM | KIND_ENUM64) && t.name_off != 0 => Param::Enum(name(t.name_off)),
        _ => Param::Other,
    }
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
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert_eq!(KernelBtf::parse(b"\x7fELF....").unwrap_err(), "bad magic");
        // The right magic but sections pointing past the end.
        let mut short = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        short.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(KernelBtf::parse(&short).is_err());
    }
}
