//! Struct layouts from the kernel's own BTF (`/sys/kernel/btf/vmlinux`): the offsets the kprobe
//! and fentry programs need (`struct socket`'s `sk`, `struct task_struct`'s `stack`) and the
//! size of `struct pt_regs`, which differ between kernel versions and configurations.
//!
//! A reader of the BTF type section just deep enough for struct members. Written here because
//! aya's BTF type keeps members private and the one maintained BTF crate (`btf-rs`) is
//! LGPL-2.1, which this MIT/Apache-2.0 workspace does not link. Format:
//! Documentation/bpf/btf.rst in the kernel tree.

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {0} has no member {1}")]
    NoMember(String, String),
}

/// One struct's size and its members' byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    pub size: u32,
    members: Vec<(String, u32)>,
}

impl StructLayout {
    pub fn offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        self.members
            .iter()
            .find(|(n, _)| n == member)
            .map(|(_, o)| *o)
            .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))
    }
}

/// A struct member found by [`Btf::member`]: its byte offset in the outer struct and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub ty: Shape,
}

/// A member's type, as far as the offset tables need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Int {
        size: u32,
        signed: bool,
    },
    Array {
        elem: Box<Shape>,
        len: u32,
    },
    /// Another BTF kind (struct, pointer, enum...).
    Other {
        kind: u32,
    },
}

/// A parsed BTF blob: the type section and the strings.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl<'a> Btf<'a> {
    /// Little-endian BTF, as on x86_64 and arm64.
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Malformed("truncated header"))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len + u32_at(data, off)? as usize;
            let len = u32_at(data, len)? as usize;
            data.get(start..start + len)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        Ok(Self {
            types: section(8, 12)?,
            strings: section(16, 20)?,
        })
    }

    fn name(&self, offset: u32) -> &'a [u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Calls `f(kind, name offset, info, size or type, body offset)` for each type in order
    /// until it returns Some.
    fn find<T>(
        &self,
        mut f: impl FnMut(u32, u32, u32, u32, usize) -> Result<Option<T>, BtfError>,
    ) -> Result<Option<T>, BtfError> {
        let mut at = 0;
        while at < self.types.len() {
            let name_off = u32_at(self.types, at)?;
            let info = u32_at(self.types, at + 4)?;
            let size = u32_at(self.types, at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let body = at + 12;
            let extra = match kind {
                // INT, VAR, DECL_TAG: one u32.
                1 | 14 | 17 => 4,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
                2 | 7..=12 | 16 | 18 => 0,
                // ARRAY: type, index type, count.
                3 => 12,
                // STRUCT, UNION: name, type, offset per member; DATASEC and ENUM64: 12 each.
                4 | 5 | 15 | 19 => 12 * vlen,
                // ENUM, FUNC_PROTO: 8 per entry.
                6 | 13 => 8 * vlen,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            if let Some(found) = f(kind, name_off, info, size, body)? {
                return Ok(Some(found));
            }
            at = body + extra;
        }
        Ok(None)
    }

    /// The first struct named `name` (the kernel's BTF has one definition per name for the
    /// structs asked for here).
    pub fn struct_layout(&self, name: &str) -> Result<StructLayout, BtfError> {
        self.find(|kind, name_off, info, size, body| {
            if kind != KIND_STRUCT || self.name(name_off) != name.as_bytes() {
                return Ok(None);
            }
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut members = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let m = body + 12 * i;
                let member_name = String::from_utf8_lossy(self.name(u32_at(self.types, m)?));
                let raw = u32_at(self.types, m + 8)?;
                // With kflag the low 24 bits are the bit offset (bitfield size above).
                let bits = if kflag { raw & 0x00ff_ffff } else { raw };
                members.push((member_name.into_owned(), bits / 8));
            }
            Ok(Some(StructLayout { size, members }))
        })?
        .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// Kind, info, size-or-type and body offset of type `id` (1-based, in section order).
    fn type_by_id(&self, id: u32) -> Result<(u32, u32, u32, usize), BtfError> {
        let mut current = 0;
        self.find(|kind, _, info, size, body| {
            current += 1;
            Ok((current == id).then_some((kind, info, size, body)))
        })?
        .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Type `id` with typedefs and qualifiers (const, volatile, restrict, type tags) removed.
    fn resolve(&self, mut id: u32) -> Result<(u32, u32, u32, usize), BtfError> {
        // Chains are a few links long; the bound only stops a malformed cycle.
        for _ in 0..32 {
            let t = self.type_by_id(id)?;
            match t.0 {
                8 | 9 | 10 | 11 | 18 => id = t.2,
                _ => return Ok(t),
            }
        }
        Err(BtfError::Malformed("typedef chain too long"))
    }

    /// What member `member` of struct `name` is, looking through anonymous struct and union
    /// members the way C does (`regs` of arm64's `pt_regs` is inside an anonymous union).
    pub fn member(&self, name: &str, member: &str) -> Result<Member, BtfError> {
        let id = self.struct_id(name)?;
        self.member_in(id, member, 0, 0)?
            .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        let mut current = 0;
        self.find(|kind, name_off, _, _, _| {
            current += 1;
            Ok((kind == KIND_STRUCT && self.name(name_off) == name.as_bytes()).then_some(current))
        })?
        .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    fn member_in(
        &self,
        id: u32,
        member: &str,
        base: u32,
        depth: u32,
    ) -> Result<Option<Member>, BtfError> {
        if depth > 8 {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        let (kind, info, _, body) = self.resolve(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return Ok(None);
        }
        let kflag = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let m = body + 12 * i;
            let name = self.name(u32_at(self.types, m)?);
            let type_id = u32_at(self.types, m + 4)?;
            let raw = u32_at(self.types, m + 8)?;
            let bits = if kflag { raw & 0x00ff_ffff } else { raw };
            let offset = base + bits / 8;
            if name == member.as_bytes() {
                return Ok(Some(Member {
                    offset,
                    ty: self.shape(type_id)?,
                }));
            }
            if name.is_empty()
                && let Some(found) = self.member_in(type_id, member, offset, depth + 1)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn shape(&self, id: u32) -> Result<Shape, BtfError> {
        let (kind, _, size, body) = self.resolve(id)?;
        Ok(match kind {
            KIND_INT => {
                let encoding = u32_at(self.types, body)?;
                Shape::Int {
                    size,
                    signed: (encoding >> 24) & 1 == 1,
                }
            }
            KIND_ARRAY => {
                let elem = u32_at(self.types, body)?;
                let len = u32_at(self.types, body + 8)?;
                Shape::Array {
                    elem: Box::new(self.shape(elem)?),
                    len,
                }
            }
            _ => Shape::Other { kind },
        })
    }

    /// Whether the kernel has a function named `name` (a BTF `FUNC`: one fexit and kprobes can
    /// attach to).
    pub fn has_function(&self, name: &str) -> Result<bool, BtfError> {
        Ok(self
            .find(|kind, name_off, _, _, _| {
                Ok((kind == KIND_FUNC && self.name(name_off) == name.as_bytes()).then_some(()))
            })?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against this machine's kernel: `struct socket` has had `sk` at 24 on 64-bit kernels
    /// since 5.x (state, type, flags, file, sk); `struct pt_regs` is 21 registers on x86_64.
    #[test]
    fn reads_the_running_kernels_layouts() {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
        let btf = Btf::parse(&data).unwrap();
        let socket = btf.struct_layout("socket").unwrap();
        assert_eq!(socket.offset("socket", "sk").unwrap(), 24);
        assert_eq!(socket.offset("socket", "state").unwrap(), 0);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(btf.struct_layout("pt_regs").unwrap().size, 21 * 8);
        let task = btf.struct_layout("task_struct").unwrap();
        let stack = task.offset("task_struct", "stack").unwrap();
        assert!(stack > 0 && stack < task.size, "{stack}");
        assert!(matches!(
            btf.struct_layout("no_such_struct_here"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            socket.offset("socket", "nope"),
            Err(BtfError::NoMember(..))
        ));
        // The functions the kprobe and fentry hooks attach to exist on every kernel since 5.x;
        // `inet_sendpage` went in 6.5 (sendfile goes through `inet_sendmsg` since).
        for f in [
            "inet_sendmsg",
            "inet6_sendmsg",
            "inet_recvmsg",
            "inet6_recvmsg",
        ] {
            assert!(btf.has_function(f).unwrap(), "{f}");
        }
        assert!(!btf.has_function("inet_sendpage").unwrap());
        assert!(
            !btf.has_function("socket").unwrap(),
            "a struct is not a function"
        );
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0u8; 24]).is_err());
    }
}
