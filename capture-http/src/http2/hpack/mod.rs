//! HPACK (RFC 7541): the header compression of HTTP/2, decoded passively.
//!
//! One [`Decoder`] per connection and direction holds that direction's dynamic table. It
//! decodes whole header blocks (HEADERS/PUSH_PROMISE plus CONTINUATION fragments) and hands
//! out each field with whether it was sent as never-indexed (§6.2.3, a sensitivity hint).
//!
//! A passive decoder may not know the dynamic table (the connection predates the capture, or
//! bytes were lost): see [`table::DynamicTable`]. Fields that refer to an entry it does not
//! know are reported as [`Decoded::Unresolved`], never attributed to another entry; static
//! entries and literals still decode. The table becomes known again when a size update to 0
//! empties it, or when entries inserted since fill it (with its maximum size known).
//!
//! No crate fits: `hpack`, `fluke-hpack`/`loona-hpack` and `httlib-hpack` all stop at the
//! first index they cannot resolve, and only `httlib-hpack` (unmaintained) reports
//! never-indexed fields. So the decoder is written here and tested with all of Appendix C.
//!
//! Error values name what went wrong, never header bytes.

pub mod huffman;
pub mod table;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use table::{DynamicTable, Lookup, STATIC_TABLE};

pub use table::ENTRY_OVERHEAD;

/// Why a header block does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a field representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer longer than this decoder accepts (RFC 7541 §5.1 leaves the limit to it).
    #[error("integer overflow")]
    IntegerOverflow,
    #[error("invalid Huffman string: {0}")]
    Huffman(#[from] huffman::HuffmanError),
    /// Index 0, or past the static and a fully known dynamic table.
    #[error("invalid table index")]
    InvalidIndex,
}

/// A decoded header field, borrowed from the static table, the dynamic table or the
/// decoder's buffers: the caller copies what it keeps, once (into the message's
/// `Headers`), and nothing is allocated per field unless it is not UTF-8.
///
/// `Debug` shows the name and the value's length only (values carry credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// As sent; not UTF-8 bytes are replaced by U+FFFD.
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
    /// Sent as a never-indexed literal (RFC 7541 §6.2.3): the sender marked it sensitive.
    pub never_indexed: bool,
    /// RFC 7541 §4.1 size (name and value octets plus 32), as RFC 9113 §6.5.2 counts header
    /// list sizes.
    pub size: usize,
}

impl Field<'_> {
    /// A copy that borrows nothing.
    pub fn into_owned(self) -> Field<'static> {
        Field {
            name: Cow::Owned(self.name.into_owned()),
            value: Cow::Owned(self.value.into_owned()),
            never_indexed: self.never_indexed,
            size: self.size,
        }
    }
}

impl std::fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: <{} bytes>{}",
            self.name,
            self.value.len(),
            if self.never_indexed {
                " (never indexed)"
            } else {
                ""
            }
        )
    }
}

/// One field representation of a block, as far as it decodes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Field(Field<'a>),
    /// The field refers to a dynamic table entry this decoder does not know.
    Unresolved,
}

impl Decoded<'_> {
    /// A copy that borrows nothing.
    pub fn into_owned(self) -> Decoded<'static> {
        match self {
            Self::Field(f) => Decoded::Field(f.into_owned()),
            Self::Unresolved => Decoded::Unresolved,
        }
    }
}

/// What decoding a block found besides the fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockInfo {
    /// Fields reported as [`Decoded::Unresolved`].
    pub unresolved: usize,
    /// A size update asked for a table larger than the cap (`--max-hpack-table-bytes`).
    pub over_cap: bool,
}

/// The HPACK decoder of one direction of a connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// Integers above this are refused: no table size, index or string length a peer can use is
/// anywhere near (RFC 9113 frames are at most 2^24 - 1 bytes).
const MAX_INT: usize = 1 << 28;

impl Decoder {
    /// The decoder of a connection seen from its start; `cap` bounds the table (bytes).
    pub fn new(cap: usize) -> Self {
        Self::with_table(DynamicTable::new(cap))
    }

    /// The decoder of a connection joined mid-way: the dynamic table is unknown.
    pub fn unknown(cap: usize) -> Self {
        Self::with_table(DynamicTable::unknown(cap))
    }

    fn with_table(table: DynamicTable) -> Self {
        Self {
            table,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// The table is not (or no longer) known: bytes of this direction were lost.
    pub fn forget(&mut self) {
        self.table.forget();
    }

    /// Whether the dynamic table is fully known.
    pub fn is_known(&self) -> bool {
        self.table.is_known()
    }

    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decodes one whole header block, handing each field to `emit` in order.
    ///
    /// On an error the fields before it have been emitted, and the table is forgotten: what
    /// the rest of the block inserted is lost.
    pub fn decode_block(
        &mut self,
        block: &[u8],
        mut emit: impl FnMut(Decoded<'_>),
    ) -> Result<BlockInfo, HpackError> {
        let mut info = BlockInfo::default();
        let mut rest = block;
        while let Some(&first) = rest.first() {
            match self.representation(first, rest, &mut info, &mut emit) {
                Ok(used) => rest = &rest[used..],
                Err(e) => {
                    self.table.forget();
                    return Err(e);
                }
            }
        }
        Ok(info)
    }

    /// Decodes the representation at the start of `buf`; returns its length.
    fn representation(
        &mut self,
        first: u8,
        buf: &[u8],
        info: &mut BlockInfo,
        emit: &mut impl FnMut(Decoded<'_>),
    ) -> Result<usize, HpackError> {
        if first & 0x80 != 0 {
            // §6.1 Indexed Header Field.
            let (index, used) = integer(buf, 7)?;
            let decoded = match self.lookup(index)? {
                Name::Static(i) => {
                    let (name, value) = STATIC_TABLE[i];
                    Decoded::Field(Field {
                        name: Cow::Borrowed(name),
                        value: Cow::Borrowed(value),
                        never_indexed: false,
                        size: name.len() + value.len() + ENTRY_OVERHEAD,
                    })
                }
                Name::Dynamic(i) => match self.table.get(i) {
                    Lookup::Entry(e) => match e.name {
                        Some(name) => Decoded::Field(Field {
                            size: e.size(),
                            name: lossy(name),
                            value: lossy(e.value),
                            never_indexed: false,
                        }),
                        None => Decoded::Unresolved,
                    },
                    Lookup::Unknown | Lookup::Invalid => Decoded::Unresolved,
                },
                Name::Unknown => Decoded::Unresolved,
            };
            if decoded == Decoded::Unresolved {
                info.unresolved += 1;
            }
            emit(decoded);
            return Ok(used);
        }
        if first & 0xe0 == 0x20 {
            // §6.3 Dynamic Table Size Update.
            let (size, used) = integer(buf, 5)?;
            if !self.table.set_max_size(size) {
                info.over_cap = true;
            }
            return Ok(used);
        }
        // §6.2: literals. With incremental indexing: 01xxxxxx, 6-bit prefix; without: 0000xxxx
        // and never indexed: 0001xxxx, 4-bit prefix.
        let (indexing, never_indexed, prefix) = if first & 0xc0 == 0x40 {
            (true, false, 6)
        } else {
            (false, first & 0x10 != 0, 4)
        };
        let (name_index, mut used) = integer(buf, prefix)?;
        // The name: an index, or a literal string (index 0).
        let mut name = NameSource::Unknown;
        if name_index == 0 {
            self.name_buf.clear();
            used += string(&buf[used..], &mut self.name_buf)?;
            name = NameSource::Literal;
        } else {
            match self.lookup(name_index)? {
                Name::Static(i) => name = NameSource::Static(i),
                Name::Dynamic(i) => {
                    if let Lookup::Entry(e) = self.table.get(i)
                        && let Some(n) = e.name
                    {
                        self.name_buf.clear();
                        self.name_buf.extend_from_slice(n);
                        name = NameSource::Literal;
                    }
                }
                Name::Unknown => {}
            }
        }
        self.value_buf.clear();
        used += string(&buf[used..], &mut self.value_buf)?;
        let name_bytes: Option<&[u8]> = match name {
            NameSource::Static(i) => Some(STATIC_TABLE[i].0.as_bytes()),
            NameSource::Literal => Some(&self.name_buf),
            NameSource::Unknown => None,
        };
        let decoded = match name_bytes {
            Some(n) => Decoded::Field(Field {
                size: n.len() + self.value_buf.len() + ENTRY_OVERHEAD,
                name: lossy(n),
                value: lossy(&self.value_buf),
                never_indexed,
            }),
            None => {
                info.unresolved += 1;
                Decoded::Unresolved
            }
        };
        if indexing {
            self.table.insert(name_bytes, &self.value_buf);
        }
        emit(decoded);
        Ok(used)
    }

    /// Which table an index (1-based, §2.3.3) falls in.
    fn lookup(&self, index: usize) -> Result<Name, HpackError> {
        match index {
            0 => Err(HpackError::InvalidIndex),
            1..=61 => Ok(Name::Static(index - 1)),
            _ => match self.table.get(index - 62) {
                Lookup::Entry(_) => Ok(Name::Dynamic(index - 62)),
                Lookup::Unknown => Ok(Name::Unknown),
                Lookup::Invalid => Err(HpackError::InvalidIndex),
            },
        }
    }
}

enum Name {
    Static(usize),
    Dynamic(usize),
    Unknown,
}

enum NameSource {
    Static(usize),
    Literal,
    Unknown,
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` validates faster than the lossy conversion; most fields are ASCII.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// RFC 7541 §5.1: an integer with an N-bit prefix; returns it and the bytes used.
pub fn integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), HpackError> {
    let mask = ((1u16 << prefix) - 1) as u8;
    let Some(&first) = buf.first() else {
        return Err(HpackError::Truncated);
    };
    let mut value = usize::from(first & mask);
    if value < usize::from(mask) {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INT {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        shift += 7;
    }
    Err(HpackError::Truncated)
}

/// RFC 7541 §5.2: a string literal, appended to `out` (Huffman-decoded if so coded); returns
/// the bytes used.
pub fn string(buf: &[u8], out: &mut Vec<u8>) -> Result<usize, HpackError> {
    let huffman = buf.first().is_some_and(|b| b & 0x80 != 0);
    let (len, used) = integer(buf, 7)?;
    let end = used.checked_add(len).ok_or(HpackError::IntegerOverflow)?;
    let Some(raw) = buf.get(used..end) else {
        return Err(HpackError::Truncated);
    };
    if huffman {
        huffman::decode(raw, out)?;
    } else {
        out.extend_from_slice(raw);
    }
    Ok(end)
}

/// How an [`Encoder`] sends a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    /// Literal with incremental indexing (§6.2.1), or an indexed field when the table has it.
    Incremental,
    /// Literal without indexing (§6.2.2).
    Without,
    /// Never-indexed literal (§6.2.3).
    Never,
}

/// A small HPACK encoder, for tests, benchmarks and fuzz seeds: it indexes what it is asked
/// to, refers to exact matches in both tables, and Huffman-codes strings when that is shorter.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Newest first, with the table's size.
    entries: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: Option<usize>,
    /// Huffman-code strings when shorter (default off: literal octets).
    pub huffman: bool,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a table size update at the start of the next block.
    pub fn set_max_size(&mut self, size: usize, out: &mut Vec<u8>) {
        put_int(out, 0x20, 5, size);
        self.max_size = Some(size);
        self.evict();
    }

    fn max(&self) -> usize {
        self.max_size.unwrap_or(DynamicTable::DEFAULT_MAX_SIZE)
    }

    fn evict(&mut self) {
        while self.size > self.max() {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    /// Appends the representation of one field.
    pub fn field(&mut self, name: &[u8], value: &[u8], how: Indexing, out: &mut Vec<u8>) {
        let full = STATIC_TABLE
            .iter()
            .position(|(n, v)| n.as_bytes() == name && v.as_bytes() == value)
            .map(|i| i + 1)
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|(n, v)| n == name && v == value)
                    .map(|i| i + 62)
            });
        if how == Indexing::Incremental
            && let Some(index) = full
        {
            put_int(out, 0x80, 7, index);
            return;
        }
        let name_index = STATIC_TABLE
            .iter()
            .position(|(n, _)| n.as_bytes() == name)
            .map(|i| i + 1)
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|i| i + 62)
            })
            .unwrap_or(0);
        let (flags, prefix) = match how {
            Indexing::Incremental => (0x40, 6),
            Indexing::Without => (0x00, 4),
            Indexing::Never => (0x10, 4),
        };
        put_int(out, flags, prefix, name_index);
        if name_index == 0 {
            self.put_string(out, name);
        }
        self.put_string(out, value);
        if how == Indexing::Incremental {
            let size = name.len() + value.len() + ENTRY_OVERHEAD;
            if size > self.max() {
                self.entries.clear();
                self.size = 0;
            } else {
                self.entries.push_front((name.to_vec(), value.to_vec()));
                self.size += size;
                self.evict();
            }
        }
    }

    fn put_string(&self, out: &mut Vec<u8>, s: &[u8]) {
        let coded = huffman::encoded_len(s);
        if self.huffman && coded < s.len() {
            put_int(out, 0x80, 7, coded);
            huffman::encode(s, out);
        } else {
            put_int(out, 0x00, 7, s.len());
            out.extend_from_slice(s);
        }
    }
}

/// RFC 7541 §5.1 integer with an N-bit prefix, the first byte's other bits set to `flags`.
pub fn put_int(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}
