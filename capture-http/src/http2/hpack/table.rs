//! The HPACK static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2, §4).
//!
//! A passive observer may not know the whole dynamic table: it joined a connection that was
//! already running, or lost bytes of a header block. [`DynamicTable`] then knows only the
//! entries inserted since (the newest ones) and keeps a flag that older, unknown entries may
//! follow them. Entries are only ever added at the front and evicted from the back (§4.4), so
//! the newest entries it holds are at exactly the indexes the encoder uses: an index it holds
//! is always resolved right, an index past them is reported unknown, never guessed.

use std::collections::VecDeque;

/// RFC 7541 Appendix A, index 1 first.
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
pub const ENTRY_OVERHEAD: usize = 32;

/// One dynamic table entry, as the octets that were sent, borrowed from the table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry<'t> {
    /// `None`: inserted with a name that referred to an unknown entry. Its size is then not
    /// known either; `size` counts the name as empty (a lower bound, so this decoder evicts
    /// no earlier than the encoder).
    pub name: Option<&'t [u8]>,
    pub value: &'t [u8],
}

impl Entry<'_> {
    pub fn size(&self) -> usize {
        self.name.map_or(0, <[u8]>::len) + self.value.len() + ENTRY_OVERHEAD
    }
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values can be credentials: show sizes only.
        match &self.name {
            Some(name) => write!(f, "<{} + {} bytes>", name.len(), self.value.len()),
            None => write!(f, "<unknown name + {} bytes>", self.value.len()),
        }
    }
}

/// What an index into the dynamic table refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'t> {
    Entry(Entry<'t>),
    /// Past the entries known: an entry from before the observer joined (or lost bytes).
    Unknown,
    /// Past the end of a table that is fully known: the encoder cannot have sent it.
    Invalid,
}

/// Where one entry's octets are in [`DynamicTable`]'s byte buffer: its name (if known), then
/// its value, from `start`, an offset counted from the first byte the table ever held, so
/// that dropping bytes from the front of the buffer moves no span.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    /// `None`: the name referred to an unknown entry.
    name_len: Option<usize>,
    value_len: usize,
}

/// The dynamic table of one direction of a connection, as far as it is known.
///
/// Entries live in one byte buffer, oldest first, the way nghttp2 keeps its table: an
/// insertion appends its octets and an eviction only forgets a span, so a table costs no
/// allocation per entry. Bytes of evicted entries are dropped from the front of the buffer
/// once they are at least as many as the live ones, which bounds the buffer to about twice
/// the table's size and the copying to once per byte inserted, amortised.
#[derive(Debug)]
pub struct DynamicTable {
    /// Newest first.
    entries: VecDeque<Span>,
    /// The octets of `entries` (and of evicted entries not yet dropped), oldest first.
    bytes: Vec<u8>,
    /// The offset (as in [`Span::start`]) of `bytes[0]`.
    base: usize,
    /// Sum of `Entry::size` of `entries`.
    size: usize,
    /// The maximum size in force (§4.2), as far as this decoder applies it: the last size
    /// update, bounded by `cap`.
    max_size: usize,
    /// Whether `max_size` is the encoder's: the start of the connection (4096) or a size
    /// update was seen, and it was within `cap`.
    max_known: bool,
    /// Entries older than `entries` may exist that this decoder never saw.
    tail_unknown: bool,
    /// Most bytes of entries kept, whatever a peer announces (`--max-hpack-table-bytes`).
    cap: usize,
    /// Entries held whose name (and so size) is unknown; the table cannot be proven whole
    /// while there are any.
    placeholders: usize,
}

impl DynamicTable {
    /// RFC 7541 §4.2 with RFC 9113 §6.5.2: the initial maximum is SETTINGS_HEADER_TABLE_SIZE's
    /// default, 4096.
    pub const DEFAULT_MAX_SIZE: usize = 4096;

    /// A table at the start of a connection: empty and fully known.
    pub fn new(cap: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: Vec::new(),
            base: 0,
            size: 0,
            max_size: Self::DEFAULT_MAX_SIZE.min(cap),
            max_known: Self::DEFAULT_MAX_SIZE <= cap,
            tail_unknown: Self::DEFAULT_MAX_SIZE > cap,
            cap,
            placeholders: 0,
        }
    }

    /// A table of a connection joined mid-way (or after lost bytes): nothing is known.
    pub fn unknown(cap: usize) -> Self {
        let mut t = Self::new(cap);
        t.forget();
        t
    }

    /// Forgets every entry: the encoder's table may hold entries this decoder missed.
    pub fn forget(&mut self) {
        self.clear();
        self.placeholders = 0;
        self.tail_unknown = true;
        self.max_known = false;
    }

    /// Whether every entry the encoder may refer to is known.
    pub fn is_known(&self) -> bool {
        !self.tail_unknown
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the entry sizes held (§4.1).
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Entry `i` (0 is the newest, HPACK index 62).
    pub fn get(&self, i: usize) -> Lookup<'_> {
        match self.entries.get(i) {
            Some(span) => Lookup::Entry(self.entry(span)),
            None if self.tail_unknown => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    /// A dynamic table size update (§6.3). Returns false when `new_max` is over the cap: the
    /// table is then kept at the cap, and entries past it become unknown.
    pub fn set_max_size(&mut self, new_max: usize) -> bool {
        let within = new_max <= self.cap;
        self.max_size = new_max.min(self.cap);
        self.evict(0);
        self.max_known = within;
        if !within {
            self.tail_unknown = true;
        } else if new_max == 0 {
            // An empty table is a known table: recovery after a mid-stream start.
            self.tail_unknown = false;
        }
        self.check_recovered();
        within
    }

    fn entry(&self, span: &Span) -> Entry<'_> {
        let at = span.start - self.base;
        let name_len = span.name_len.unwrap_or(0);
        let (name, value) = self.bytes[at..at + name_len + span.value_len].split_at(name_len);
        Entry {
            name: span.name_len.map(|_| name),
            value,
        }
    }

    /// Empties the table (its known part).
    fn clear(&mut self) {
        self.entries.clear();
        self.base += self.bytes.len();
        self.bytes.clear();
        self.size = 0;
        self.placeholders = 0;
    }

    /// Inserts an entry (§4.4); `name` is `None` when it referred to an unknown entry. An
    /// entry larger than the maximum size empties the table.
    pub fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let size = Entry { name, value }.size();
        if size > self.max_size {
            self.clear();
            // With the maximum and the entry's size known, the encoder's table is now empty
            // too.
            if self.max_known && name.is_some() {
                self.tail_unknown = false;
            }
            return;
        }
        // §4.4: evict until the new entry fits, then add it (so its octets may reuse the
        // room).
        self.evict(size);
        self.size += size;
        let span = Span {
            start: self.base + self.bytes.len(),
            name_len: name.map(<[u8]>::len),
            value_len: value.len(),
        };
        if let Some(name) = name {
            self.bytes.extend_from_slice(name);
        }
        self.bytes.extend_from_slice(value);
        self.placeholders += usize::from(name.is_none());
        self.entries.push_front(span);
        self.check_recovered();
    }

    /// Drops the evicted entries' bytes from the front of the buffer once they are at least
    /// as many as the live ones.
    fn compact(&mut self) {
        let live_from = self
            .entries
            .back()
            .map_or(self.base + self.bytes.len(), |s| s.start);
        let dead = live_from - self.base;
        if dead > 0 && dead >= self.bytes.len() - dead {
            self.bytes.drain(..dead);
            self.base = live_from;
        }
    }

    /// Evicts the oldest entries until `room` more bytes fit under the maximum size.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.entries.pop_back() {
                Some(span) => {
                    self.size -= self.entry(&span).size();
                    self.placeholders -= usize::from(span.name_len.is_none());
                }
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
        if self.entries.is_empty() {
            self.clear();
        } else {
            self.compact();
        }
    }

    /// With the maximum size known, once the known entries leave no room for even an empty
    /// older entry (32 bytes), no older entry can still be in the encoder's table.
    fn check_recovered(&mut self) {
        if self.tail_unknown
            && self.max_known
            && self.placeholders == 0
            && self.size + ENTRY_OVERHEAD > self.max_size
        {
            self.tail_unknown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 7541 §4 as written: owned entries, newest first.
    #[derive(Default)]
    struct Model {
        entries: VecDeque<(Option<Vec<u8>>, Vec<u8>)>,
        max_size: usize,
    }

    fn size_of(name: Option<&[u8]>, value: &[u8]) -> usize {
        name.map_or(0, <[u8]>::len) + value.len() + ENTRY_OVERHEAD
    }

    impl Model {
        fn size(&self) -> usize {
            self.entries
                .iter()
                .map(|(n, v)| size_of(n.as_deref(), v))
                .sum()
        }

        fn evict(&mut self, room: usize) {
            while !self.entries.is_empty() && self.size() + room > self.max_size {
                self.entries.pop_back();
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Option<Vec<u8>>, Vec<u8>),
        SetMax(usize),
        Forget,
    }

    fn op() -> impl Strategy<Value = Op> {
        let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
        prop_oneof![
            8 => (proptest::option::weighted(0.9, bytes(40)), bytes(120))
                .prop_map(|(n, v)| Op::Insert(n, v)),
            1 => (0usize..600).prop_map(Op::SetMax),
            1 => Just(Op::Forget),
        ]
    }

    proptest! {
        /// The byte-buffer table holds exactly the entries the RFC's table holds, and its buffer
        /// stays within about twice their octets.
        #[test]
        fn agrees_with_the_rfc_model(ops in proptest::collection::vec(op(), 0..200)) {
            let cap = 512;
            let mut table = DynamicTable::new(cap);
            let mut model = Model { max_size: DynamicTable::DEFAULT_MAX_SIZE.min(cap), ..Model::default() };
            for op in ops {
                match op {
                    Op::Insert(name, value) => {
                        table.insert(name.as_deref(), &value);
                        let size = size_of(name.as_deref(), &value);
                        if size > model.max_size {
                            model.entries.clear();
                        } else {
                            model.evict(size);
                            model.entries.push_front((name, value));
                        }
                    }
                    Op::SetMax(max) => {
                        table.set_max_size(max);
                        model.max_size = max.min(cap);
                        model.evict(0);
                    }
                    Op::Forget => {
                        table.forget();
                        model.entries.clear();
                    }
                }
                prop_assert_eq!(table.len(), model.entries.len());
                prop_assert_eq!(table.size(), model.size());
                for (i, (name, value)) in model.entries.iter().enumerate() {
                    let expected = Entry { name: name.as_deref(), value };
                    prop_assert_eq!(table.get(i), Lookup::Entry(expected));
                }
                prop_assert!(!matches!(table.get(model.entries.len()), Lookup::Entry(_)));
                let live: usize = model
                    .entries
                    .iter()
                    .map(|(n, v)| n.as_ref().map_or(0, Vec::len) + v.len())
                    .sum();
                prop_assert!(table.bytes.len() <= 2 * live, "{} bytes for {live}", table.bytes.len());
            }
        }
    }
}
