//! JSON text written straight into a byte buffer: strings escaped exactly as `serde_json`
//! escapes them, numbers formatted with the algorithms `serde_json` uses, base64 without a
//! second escaping pass. The HAR writer (`har`) is built from these; its output is byte for
//! byte what `serde_json` made of the same entry before.
//!
//! Escaping works on words of eight bytes: a word with nothing to escape (found with SWAR,
//! three byte-wise tests on a `u64`) is stored whole; a word with something to escape is
//! expanded byte by byte from a table, each byte one fixed-size store and one addition, with
//! no branch on the byte: JSON bodies have a quote every few bytes, where a copy call per
//! clean run (or a branch per escape) would cost more than the bytes.

use std::fmt;

/// Every byte as it appears inside a JSON string, as `serde_json` escapes it (RFC 8259 §7):
/// up to 6 bytes, padded to 7, and their count in the last byte. The byte itself for most;
/// the short form for the seven bytes that have one; `\u00XX` (lowercase hex) for the other
/// controls. DEL and U+2028/U+2029 are not escaped, as `serde_json` leaves them.
static ESCAPED: [[u8; 8]; 256] = escape_table();

const fn escape_table() -> [[u8; 8]; 256] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0_u8; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let short = match b as u8 {
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            b'"' => b'"',
            b'\\' => b'\\',
            _ => 0,
        };
        table[b] = if short != 0 {
            [b'\\', short, 0, 0, 0, 0, 0, 2]
        } else if b < 0x20 {
            [b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 0xf], 0, 6]
        } else {
            [b as u8, 0, 0, 0, 0, 0, 0, 1]
        };
        b += 1;
    }
    table
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `word` needs escaping (a control, `"` or `\`).
#[inline]
fn needs_escape(word: u64) -> bool {
    // "Has a byte less than n" and "has a zero byte" (Hacker's Delight §6-1): a borrow can
    // flag a byte above one that is flagged rightly, but never flags a word with none.
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGHS != 0
}

/// Input bytes escaped per round: the output buffer grows by six times this (the longest
/// escape) and is cut back after, so a huge body never needs six times its size at once.
const BLOCK: usize = 512;

/// The window a word with escapes is expanded in: 8 escapes of at most 7 bytes (the length
/// is masked to 3 bits, so the compiler knows the bound) and the last 8-byte store.
const WINDOW: usize = 64;

/// Appends the contents of a JSON string for `text` (no quotes).
pub(crate) fn escaped(out: &mut Vec<u8>, text: &str) {
    for block in text.as_bytes().chunks(BLOCK) {
        let start = out.len();
        // Six bytes per input byte at most, and room for the last window.
        out.resize(start + block.len() * 6 + WINDOW, 0);
        let buf = &mut out[start..];
        let mut pos = 0;
        let mut words = block.chunks_exact(8);
        for chunk in &mut words {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            if needs_escape(u64::from_le_bytes(word)) {
                pos += expand(&mut buf[pos..pos + WINDOW], &word);
            } else {
                buf[pos..pos + 8].copy_from_slice(&word);
                pos += 8;
            }
        }
        pos += expand(&mut buf[pos..pos + WINDOW], words.remainder());
        out.truncate(start + pos);
    }
}

/// Writes `bytes` (at most 8) as they appear in a JSON string into `window`, each byte one
/// 8-byte store from [`ESCAPED`] with its length kept; returns the length written. The
/// indices stay below [`WINDOW`] by construction, so the stores need no bounds checks.
#[inline(always)]
fn expand(window: &mut [u8], bytes: &[u8]) -> usize {
    let Ok(window) = <&mut [u8; WINDOW]>::try_from(window) else {
        return 0;
    };
    let mut p = 0;
    for &b in bytes.iter().take(8) {
        let escaped = &ESCAPED[usize::from(b)];
        window[p..p + 8].copy_from_slice(escaped);
        p += usize::from(escaped[7] & 7);
    }
    p
}

/// Appends `text` as a JSON string.
#[inline]
pub(crate) fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escaped(out, text);
    out.push(b'"');
}

/// Appends `text` as a JSON string, or `null`.
#[inline]
pub(crate) fn opt_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `data` base64-encoded (standard alphabet, padded) as a JSON string. The alphabet
/// has nothing to escape, so it is written as encoded.
pub(crate) fn base64(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    base64_simd::STANDARD.encode_append(data, out);
    out.push(b'"');
}

/// Appends an integer.
#[inline]
pub(crate) fn int<I: itoa::Integer>(out: &mut Vec<u8>, value: I) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends an integer, or `null`.
#[inline]
pub(crate) fn opt_int<I: itoa::Integer>(out: &mut Vec<u8>, value: Option<I>) {
    match value {
        Some(value) => int(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends a float as `serde_json` writes it: the shortest text that reads back as `value`
/// (`13.0`, `0.25`, `1e-7`), `null` when it is not finite.
#[inline]
pub(crate) fn float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[inline]
pub(crate) fn bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

/// Appends the `Display` text of `value` as a JSON string. For values whose text never needs
/// escaping (addresses, dates); anything else goes through [`string`].
pub(crate) fn display_plain(out: &mut Vec<u8>, value: &impl fmt::Display) {
    use std::io::Write as _;
    out.push(b'"');
    let start = out.len();
    // Writing to a Vec cannot fail, and `Display` of these types does not either.
    let _ = write!(out, "{value}");
    debug_assert!(
        !out[start..]
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\'),
        "display_plain of a value that needs escaping"
    );
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_escaped(text: &str) -> Vec<u8> {
        serde_json::to_vec(text).unwrap()
    }

    fn ours(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, text);
        out
    }

    #[test]
    fn escapes_like_serde_json() {
        let mut all_bytes = String::new();
        for b in 0_u8..0x80 {
            all_bytes.push(char::from(b));
        }
        let cases = [
            "",
            "plain",
            "\"",
            "\\",
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}j\u{7f}",
            "caf\u{e9} \u{2028}\u{2029} \u{1f600}",
            "exactly8",
            "seven\"7",
            "0123456\"",
            "01234567\"",
            "{\"id\":42,\"items\":[{\"n\":0,\"name\":\"item-00000\"}]}",
            &all_bytes,
        ];
        for text in cases {
            assert_eq!(ours(text), serde_escaped(text), "{text:?}");
        }
    }

    #[test]
    fn every_byte_at_every_offset() {
        // Each escapable (and some not) byte at each position of a 17-byte run, so both the
        // word loop and the tail see it.
        for b in 0_u8..0x80 {
            for at in 0..17 {
                let mut text = "x".repeat(17);
                text.replace_range(at..=at, char::from(b).encode_utf8(&mut [0; 4]));
                assert_eq!(ours(&text), serde_escaped(&text), "{b:#x} at {at}");
            }
        }
    }

    #[test]
    fn numbers_like_serde_json() {
        for value in [
            0.0,
            13.0,
            0.25,
            1.5,
            1e-7,
            12.345_678,
            1e21,
            104_000_000.0,
            -1.0,
        ] {
            let mut out = Vec::new();
            float(&mut out, value);
            assert_eq!(out, serde_json::to_vec(&value).unwrap(), "{value}");
        }
        let mut out = Vec::new();
        float(&mut out, f64::NAN);
        assert_eq!(out, b"null");
        let mut out = Vec::new();
        int(&mut out, -1_i64);
        opt_int::<u64>(&mut out, None);
        int(&mut out, u64::MAX);
        assert_eq!(out, b"-1null18446744073709551615");
    }

    #[test]
    fn base64_is_standard_padded() {
        use base64::Engine as _;
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut out = Vec::new();
            base64(&mut out, &data);
            let expected = format!(
                "\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(&data)
            );
            assert_eq!(out, expected.as_bytes(), "{len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_agrees_with_serde_json(text in ".*", ascii in "[ -~\\x00-\\x1f]{0,64}") {
            proptest::prop_assert_eq!(ours(&text), serde_escaped(&text));
            proptest::prop_assert_eq!(ours(&ascii), serde_escaped(&ascii));
        }
    }
}
