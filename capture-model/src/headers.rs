//! The header (or trailer) fields of one message, in wire order, kept in one text buffer.
//!
//! A decoded message used to own two `String`s per field: with ten fields that is twenty
//! allocations and frees per message on the capture path, more than every other allocation
//! of an exchange together. [`Headers`] keeps every name and value of a message in one
//! `String` and their places in one `Vec`, so a message's fields cost two allocations
//! whatever their number, and the decoders copy each field once, from the connection's
//! buffer into that text.
//!
//! Fields are read as [`HeaderRef`]s, which borrow from the text. A value that is replaced
//! ([`Headers::set_value`]) is appended to the text; the old bytes stay until the message is
//! dropped, which is bounded by the replacements redaction makes (a fixed marker per field).

// One `unsafe` block: reading a field's text without re-checking it (`Headers::slice`).
#![allow(unsafe_code)]

use std::{fmt, ops::Range};

/// One header field, owned: how tests and the readers of stored entries build fields
/// before collecting them into [`Headers`]. Values that are not UTF-8 are kept lossily
/// (U+FFFD).
///
/// `Debug` shows the name and the value's length only: header values carry credentials, and
/// a stray `?exchange` in a log line must not leak them.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <{} bytes>", self.name, self.value.len())
    }
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One field of a [`Headers`], borrowed from its text.
///
/// `Debug` shows the name and the value's length only, like [`Header`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'h> {
    pub name: &'h str,
    pub value: &'h str,
}

impl fmt::Debug for HeaderRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <{} bytes>", self.name, self.value.len())
    }
}

impl HeaderRef<'_> {
    /// An owned copy.
    pub fn to_header(self) -> Header {
        Header::new(self.name, self.value)
    }
}

impl PartialEq<Header> for HeaderRef<'_> {
    fn eq(&self, other: &Header) -> bool {
        self.name == other.name && self.value == other.value
    }
}

impl PartialEq<HeaderRef<'_>> for Header {
    fn eq(&self, other: &HeaderRef<'_>) -> bool {
        other == self
    }
}

/// Where one field's name and value are in a [`Headers`]' text (byte ranges).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// The fields of one message's header block (or trailer block), in wire order.
///
/// Equality compares the fields (names and values, in order), not how the text is laid out.
/// `Debug` shows names and value lengths, never values.
#[derive(Clone, Default)]
pub struct Headers {
    /// Every name and value, one after the other (plus values replaced by `set_value`).
    text: String,
    fields: Vec<FieldSpan>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `fields` fields of `text_bytes` bytes of names and values together.
    pub fn with_capacity(fields: usize, text_bytes: usize) -> Self {
        Self {
            text: String::with_capacity(text_bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Fields that are spans of a text the caller already holds, such as a message head as
    /// it came off the wire (start line and separators included): the text is taken as it is,
    /// so the fields cost no copy. `None` unless every span lies in `text` on char boundaries.
    ///
    /// Bytes of `text` outside the spans are kept but never read; they count in memory
    /// only.
    pub fn from_text(text: String, fields: Vec<FieldSpan>) -> Option<Self> {
        let valid = fields
            .iter()
            .all(|f| text.get(f.name.clone()).is_some() && text.get(f.value.clone()).is_some());
        valid.then_some(Self { text, fields })
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &str) {
        let name = self.append_text(name);
        let value = self.append_text(value);
        self.fields.push(FieldSpan { name, value });
    }

    fn append_text(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The field at `index`, in wire order.
    pub fn get(&self, index: usize) -> Option<HeaderRef<'_>> {
        self.fields.get(index).map(|f| self.field(f))
    }

    fn field<'h>(&'h self, f: &FieldSpan) -> HeaderRef<'h> {
        HeaderRef {
            name: self.slice(&f.name),
            value: self.slice(&f.value),
        }
    }

    /// The text of one name or value. Every read of a field goes through here (each HAR
    /// entry, each lookup), so it skips the bounds and UTF-8 boundary checks of `&text[r]`.
    fn slice(&self, r: &Range<usize>) -> &str {
        debug_assert!(self.text.get(r.clone()).is_some());
        // SAFETY: every range in `fields` is either the span `append_text` recorded for one
        // `&str` it pushed onto `text`, or one that `from_text` checked lies in `text` on char
        // boundaries; so both ends are in bounds and on char boundaries. `text`
        // is never shortened while a field refers to it (`clear` and `retain` empty it only
        // together with `fields`), and its bytes are only ever appended to.
        unsafe { self.text.get_unchecked(r.clone()) }
    }

    /// The fields in wire order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            fields: self.fields.iter(),
        }
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// The values of every field named `name` (ASCII case-insensitive), in order.
    ///
    /// Lookups run several times per message (framing, content coding, redaction): names
    /// are compared as bytes, length first, and only a matching field's value is sliced.
    pub fn values<'h, 'n>(&'h self, name: &'n str) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
        let text = self.text.as_bytes();
        self.fields
            .iter()
            .filter(move |f| {
                f.name.len() == name.len()
                    && text[f.name.clone()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|f| self.slice(&f.value))
    }

    /// Whether a field is named `name` (ASCII case-insensitive).
    pub fn contains(&self, name: &str) -> bool {
        self.value(name).is_some()
    }

    /// Keeps the fields for which `keep` returns true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(HeaderRef<'_>) -> bool) {
        let mut fields = std::mem::take(&mut self.fields);
        fields.retain(|f| keep(self.field(f)));
        self.fields = fields;
        if self.fields.is_empty() {
            self.text.clear();
        }
    }

    /// Replaces the value of the field at `index`.
    ///
    /// # Panics
    /// If `index` is out of bounds, like slice indexing.
    pub fn set_value(&mut self, index: usize, value: &str) {
        let range = self.append_text(value);
        self.fields[index].value = range;
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
    }

    /// Appends every field of `other`, in order.
    pub fn extend_from(&mut self, other: &Headers) {
        self.text.reserve(other.text_len());
        self.fields.reserve(other.len());
        for h in other {
            self.push(h.name, h.value);
        }
    }

    /// Moves every field of `other` to the end of `self`, leaving `other` empty (like
    /// `Vec::append`).
    pub fn append(&mut self, other: &mut Headers) {
        if self.is_empty() {
            std::mem::swap(self, other);
        } else {
            self.extend_from(other);
        }
        other.clear();
    }

    /// Bytes of names and values together (the fields' text, without separators).
    pub fn text_len(&self) -> usize {
        self.fields
            .iter()
            .map(|f| f.name.len() + f.value.len())
            .sum()
    }

    /// Owned copies of the fields, in order.
    pub fn to_vec(&self) -> Vec<Header> {
        self.iter().map(HeaderRef::to_header).collect()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the fields of a [`Headers`], in wire order.
#[derive(Clone)]
pub struct Iter<'h> {
    headers: &'h Headers,
    fields: std::slice::Iter<'h, FieldSpan>,
}

impl<'h> Iterator for Iter<'h> {
    type Item = HeaderRef<'h>;

    fn next(&mut self) -> Option<HeaderRef<'h>> {
        self.fields.next().map(|f| self.headers.field(f))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.fields.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.fields.next_back().map(|f| self.headers.field(f))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'h> IntoIterator for &'h Headers {
    type Item = HeaderRef<'h>;
    type IntoIter = Iter<'h>;

    fn into_iter(self) -> Iter<'h> {
        self.iter()
    }
}

impl<'h> FromIterator<HeaderRef<'h>> for Headers {
    fn from_iter<I: IntoIterator<Item = HeaderRef<'h>>>(iter: I) -> Self {
        let mut headers = Self::new();
        for h in iter {
            headers.push(h.name, h.value);
        }
        headers
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        let mut headers = Self::new();
        for h in iter {
            headers.push(&h.name, &h.value);
        }
        headers
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Self::new();
        for (name, value) in iter {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

impl PartialEq<[Header]> for Headers {
    fn eq(&self, other: &[Header]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == *b)
    }
}

impl<const N: usize> PartialEq<[Header; N]> for Headers {
    fn eq(&self, other: &[Header; N]) -> bool {
        *self == other[..]
    }
}

impl PartialEq<Vec<Header>> for Headers {
    fn eq(&self, other: &Vec<Header>) -> bool {
        *self == other[..]
    }
}

impl From<Vec<Header>> for Headers {
    fn from(fields: Vec<Header>) -> Self {
        fields.into_iter().collect()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Headers {
    fn from(fields: [(&str, &str); N]) -> Self {
        fields.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(headers: &Headers) -> Vec<(&str, &str)> {
        headers.iter().map(|h| (h.name, h.value)).collect()
    }

    #[test]
    fn fields_keep_their_order_and_text() {
        let mut h = Headers::with_capacity(2, 8);
        h.push("Host", "a");
        h.push("", "");
        h.push("X-É", "ü\u{fffd}");
        assert_eq!(pairs(&h), [("Host", "a"), ("", ""), ("X-É", "ü\u{fffd}")]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.get(2).unwrap().name, "X-É");
        assert_eq!(h.get(3), None);
        assert_eq!(h.text_len(), 5 + "X-É".len() + "ü\u{fffd}".len());
        assert_eq!(h.iter().next_back().unwrap().name, "X-É");
        assert_eq!(h.iter().len(), 3);
    }

    #[test]
    fn value_finds_the_first_field_case_insensitively() {
        let h = Headers::from([("Accept", "1"), ("accept", "2"), ("Host", "h")]);
        assert_eq!(h.value("ACCEPT"), Some("1"));
        assert_eq!(h.values("accept").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.values("accep").count(), 0);
        assert_eq!(h.values("accepts").count(), 0);
        assert_eq!(Headers::from([("É", "1")]).value("é"), None);
        assert_eq!(h.value("host"), Some("h"));
        assert_eq!(h.value("hos"), None);
        assert!(h.contains("HOST"));
        assert!(!Headers::new().contains("host"));
    }

    #[test]
    fn set_value_replaces_one_field_and_keeps_the_others() {
        let mut h = Headers::from([("A", "1"), ("B", "22"), ("C", "333")]);
        h.set_value(1, "x");
        h.set_value(0, "");
        assert_eq!(pairs(&h), [("A", ""), ("B", "x"), ("C", "333")]);
        h.push("D", "4");
        assert_eq!(h.get(3).unwrap().value, "4");
    }

    #[test]
    fn retain_keeps_the_chosen_fields_in_order() {
        let mut h = Headers::from([("A", "1"), ("B", "2"), ("C", "3"), ("b", "4")]);
        h.retain(|f| !f.name.eq_ignore_ascii_case("b"));
        assert_eq!(pairs(&h), [("A", "1"), ("C", "3")]);
        h.set_value(1, "z");
        assert_eq!(pairs(&h), [("A", "1"), ("C", "z")]);
        h.retain(|_| false);
        assert!(h.is_empty());
        assert_eq!(h, Headers::new());
        h.push("E", "5");
        assert_eq!(pairs(&h), [("E", "5")]);
    }

    #[test]
    fn equality_compares_fields_not_layout() {
        let mut replaced = Headers::from([("A", "old"), ("B", "2")]);
        replaced.set_value(0, "1");
        let fresh = Headers::from([("A", "1"), ("B", "2")]);
        assert_eq!(replaced, fresh);
        assert_ne!(fresh, Headers::from([("A", "1")]));
        assert_ne!(fresh, Headers::from([("A", "1"), ("B", "3")]));
        // Names and values are separate: moving a byte across does not compare equal.
        assert_ne!(Headers::from([("AB", "")]), Headers::from([("A", "B")]));
    }

    #[test]
    fn fields_over_a_text_they_do_not_copy() {
        let head = "HTTP/1.1 200 OK\r\nServer: café\r\nX-Empty: \r\n\r\n".to_owned();
        let span = |s: &str| {
            let start = head.find(s).unwrap();
            start..start + s.len()
        };
        let fields = vec![
            FieldSpan {
                name: span("Server"),
                value: span("café"),
            },
            FieldSpan {
                name: span("X-Empty"),
                value: span("X-Empty: ").end..span("X-Empty: ").end,
            },
        ];
        let mut h = Headers::from_text(head.clone(), fields).unwrap();
        assert_eq!(pairs(&h), [("Server", "café"), ("X-Empty", "")]);
        assert_eq!(h.value("server"), Some("café"));
        assert_eq!(h.text_len(), "Servercafé".len() + "X-Empty".len());
        // Replacing and adding append to the same text, as for pushed fields.
        h.set_value(0, "x");
        h.push("Via", "1.1 p");
        assert_eq!(
            pairs(&h),
            [("Server", "x"), ("X-Empty", ""), ("Via", "1.1 p")]
        );

        // A span out of the text, or cutting a character in two, is refused.
        let bad = |name: Range<usize>, value: Range<usize>| {
            Headers::from_text(head.clone(), vec![FieldSpan { name, value }]).is_none()
        };
        assert!(bad(0..4, 70..71));
        assert!(bad(0..4, 5..head.len() + 1));
        let e = head.find('é').unwrap();
        assert!(bad(0..4, e..e + 1));
        assert!(bad(e + 1..e + 2, 0..4));
        assert!(!bad(0..4, e..e + 2));
    }

    #[test]
    fn conversions_round_trip() {
        let owned = vec![Header::new("A", "1"), Header::new("B", "2")];
        let h = Headers::from(owned.clone());
        assert_eq!(h.to_vec(), owned);
        assert_eq!(h, owned);
        assert_eq!(h, [Header::new("A", "1"), Header::new("B", "2")]);
        assert_ne!(h, owned[..1]);
        assert_ne!(h, [Header::new("A", "1"), Header::new("B", "3")]);
        let mut joined = Headers::from([("Z", "0")]);
        joined.extend_from(&h);
        assert_eq!(pairs(&joined), [("Z", "0"), ("A", "1"), ("B", "2")]);
        let mut moved = Headers::new();
        moved.append(&mut joined.clone());
        assert_eq!(moved, joined);
        let mut rest = Headers::from([("C", "3")]);
        moved.append(&mut rest);
        assert!(rest.is_empty());
        assert_eq!(moved.get(3).unwrap().name, "C");
        let copied: Headers = h.iter().collect();
        assert_eq!(copied, h);
        joined.clear();
        assert!(joined.is_empty() && joined.text_len() == 0);
    }

    #[test]
    fn debug_never_shows_values() {
        let h = Headers::from([("Authorization", "Bearer s3cret-token")]);
        let text = format!("{h:?} {:?} {:?}", h.get(0).unwrap(), h.to_vec());
        assert!(text.contains("Authorization"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
