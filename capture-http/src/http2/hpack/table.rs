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

/// One dynamic table entry, as the octets that were sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// `None`: inserted with a name that referred to an unknown entry. Its size is then not
    /// known either; `size` counts the name as empty (a lower bound, so this decoder evicts
    /// no earlier than the encoder).
    pub name: Option<Box<[u8]>>,
    pub value: Box<[u8]>,
}

impl Entry {
    pub fn size(&self) -> usize {
        self.name.as_ref().map_or(0, |n| n.len()) + self.value.len() + ENTRY_OVERHEAD
    }
}

impl std::fmt::Debug for Entry {
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
    Entry(&'t Entry),
    /// Past the entries known: an entry from before the observer joined (or lost bytes).
    Unknown,
    /// Past the end of a table that is fully known: the encoder cannot have sent it.
    Invalid,
}

/// The dynamic table of one direction of a connection, as far as it is known.
#[derive(Debug)]
pub struct DynamicTable {
    /// Newest first.
    entries: VecDeque<Entry>,
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
        self.entries.clear();
        self.size = 0;
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
            Some(e) => Lookup::Entry(e),
            None if self.tail_unknown => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    /// A dynamic table size update (§6.3). Returns false when `new_max` is over the cap: the
    /// table is then kept at the cap, and entries past it become unknown.
    pub fn set_max_size(&mut self, new_max: usize) -> bool {
        let within = new_max <= self.cap;
        self.max_size = new_max.min(self.cap);
        self.evict();
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

    /// Inserts an entry (§4.4); `name` is `None` when it referred to an unknown entry. An
    /// entry larger than the maximum size empties the table.
    pub fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let entry = Entry {
            name: name.map(Into::into),
            value: value.into(),
        };
        let size = entry.size();
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            self.placeholders = 0;
            // With the maximum and the entry's size known, the encoder's table is now empty
            // too.
            if self.max_known && name.is_some() {
                self.tail_unknown = false;
            }
            return;
        }
        self.size += size;
        self.placeholders += usize::from(entry.name.is_none());
        self.entries.push_front(entry);
        self.evict();
        self.check_recovered();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.entries.pop_back() {
                Some(e) => {
                    self.size -= e.size();
                    self.placeholders -= usize::from(e.name.is_none());
                }
                None => {
                    self.size = 0;
                    break;
                }
            }
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
