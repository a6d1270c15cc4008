//! Small URI helpers shared by the HAR renderer and redaction.

/// Index of the ':' ending the URI scheme, if `uri` starts with one
/// (RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
pub fn scheme_end(uri: &str) -> Option<usize> {
    let colon = uri.find(':')?;
    is_scheme(&uri[..colon]).then_some(colon)
}

/// Whether `s` is a URI scheme (RFC 3986 §3.1): a letter, then letters, digits, `+`, `-`, `.`.
pub fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}
