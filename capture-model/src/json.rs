//! JSON text written straight into a byte buffer: strings escaped exactly as `serde_json`
//! escapes them, numbers formatted with the algorithms `serde_json` uses, base64 without a
//! second escaping pass. The HAR writer (`har`) is built from these; its output is byte for
//! byte what `serde_json` made of the same entry before.
//!
//! Escaping works on words of eight bytes, tested with SWAR (three byte-wise tests on a `u64`).
//! The words before the first that needs escaping are found four at a time and copied at once:
//! most header fields and many bodies end there. From that word on, a word with nothing to
//! escape is stored whole; a word with something to escape is expanded byte by byte from a
//! table, each byte one fixed-size store and one addition, with no branch on the byte: JSON
//! bodies have a quote every few bytes, where a copy call per clean run (or a branch per
//! escape) would cost more than the bytes. Splicing each escape into the stored word instead
//! (a store per escape) measured slower on such bodies: its loop mispredicts.
//!
//! On x86-64 CPUs with SSSE3 (checked at run time), the block loop after the clean prefix is
//! `ssse3`'s instead: sixteen bytes tested at once, and eight bytes whose escapes are all `"`
//! or `\` written with one byte shuffle; words with controls still use the table above. The
//! portable loop serves every other CPU and architecture, and the tests run both.

use std::fmt;

#[cfg(target_arch = "x86_64")]
mod ssse3;

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
    escape_flags(word) != 0
}

/// Nonzero when a byte of `word` needs escaping; see [`needs_escape`].
#[inline(always)]
fn escape_flags(word: u64) -> u64 {
    // "Has a byte less than n" and "has a zero byte" (Hacker's Delight §6-1): a borrow can
    // flag a byte above one that is flagged rightly, but never flags a word with none.
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGHS
}

/// Input bytes escaped per round: the output grows by twice this (a quote, a backslash and the
/// short escapes double a byte) and is cut back after, so a huge body never needs a multiple of
/// its size at once. Controls written `\\u00XX` (six bytes) grow it further as they come.
const BLOCK: usize = 512;

/// The window a word with escapes is expanded in: 8 escapes of at most 7 bytes (the length
/// is masked to 3 bits, so the compiler knows the bound) and the last 8-byte store.
const WINDOW: usize = 64;

/// Appends the contents of a JSON string for `text` (no quotes).
pub(crate) fn escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Most header fields, and many bodies, have nothing to escape: find the first word that
    // may, and copy everything before it at once.
    let clean = clean_prefix(bytes);
    if clean == bytes.len() {
        out.extend_from_slice(bytes);
        return;
    }
    out.extend_from_slice(&bytes[..clean]);
    for block in bytes[clean..].chunks(BLOCK) {
        #[cfg(target_arch = "x86_64")]
        ssse3::escape_block(out, block);
        #[cfg(not(target_arch = "x86_64"))]
        escape_block(out, block);
    }
}

/// Appends `block` (at most [`BLOCK`] bytes) escaped, a word of eight bytes at a time.
fn escape_block(out: &mut Vec<u8>, block: &[u8]) {
    let start = out.len();
    out.resize(start + block.len() * 2 + WINDOW, 0);
    let mut pos = start;
    let mut words = block.chunks_exact(8);
    for chunk in &mut words {
        if out.len() - pos < WINDOW {
            // Controls took more than twice their room: enough for the rest at worst.
            out.resize(pos + block.len() * 6 + WINDOW, 0);
        }
        let buf = &mut out[pos..pos + WINDOW];
        let word = word(chunk);
        if needs_escape(word) {
            pos += expand(buf, chunk);
        } else {
            buf[..8].copy_from_slice(&word.to_le_bytes());
            pos += 8;
        }
    }
    let tail = words.remainder();
    if out.len() - pos < WINDOW {
        out.resize(pos + WINDOW, 0);
    }
    pos += expand(&mut out[pos..pos + WINDOW], tail);
    out.truncate(pos);
}

/// The length of the longest prefix of whole words of `bytes` with nothing to escape: the
/// whole of `bytes` when nothing in it needs escaping. Tests four words at a time.
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut clean = 0;
    for chunk in bytes.chunks_exact(32) {
        let flags = chunk
            .chunks_exact(8)
            .fold(0, |flags, chunk| flags | escape_flags(word(chunk)));
        if flags != 0 {
            break;
        }
        clean += 32;
    }
    for chunk in bytes[clean..].chunks_exact(8) {
        if needs_escape(word(chunk)) {
            return clean;
        }
        clean += 8;
    }
    let tail = &bytes[clean..];
    if tail.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        bytes.len()
    } else {
        clean
    }
}

/// The eight bytes of `chunk` as a little-endian word.
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    let mut word = [0_u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
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

/// Appends `ns` nanoseconds in milliseconds, exactly as [`float`] writes `ns as f64 / 1e6`.
///
/// Below 10^15 ns the quotient has at most 15 significant digits, and no two decimals of 15
/// digits read back as the same double, so the shortest text for the double is the decimal
/// itself, which `float` writes in plain notation from 1e-5 (10 ns) on. It is written here
/// from integers; 1 to 9 ns (`1e-6`) and 10^15 ns on, through `float`.
pub(crate) fn millis(out: &mut Vec<u8>, ns: u64) {
    if (1..10).contains(&ns) || ns >= 1_000_000_000_000_000 {
        #[expect(
            clippy::cast_precision_loss,
            reason = "exact below 2^53, as `float` needs"
        )]
        return float(out, ns as f64 / 1_000_000.0);
    }
    int(out, ns / 1_000_000);
    out.push(b'.');
    let mut fraction = ns % 1_000_000;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = 6;
    while fraction.is_multiple_of(10) {
        fraction /= 10;
        digits -= 1;
    }
    let mut buffer = itoa::Buffer::new();
    let text = buffer.format(fraction).as_bytes();
    out.extend(std::iter::repeat_n(b'0', digits - text.len()));
    out.extend_from_slice(text);
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

/// The last second RFC 3339 can write with a four-digit year: 9999-12-31T23:59:59Z.
const MAX_RFC3339_SECS: u64 = 253_402_300_799;

/// Appends `time` as a JSON string in RFC 3339, UTC, with milliseconds
/// (`"2024-05-01T12:00:00.123Z"`): byte for byte what humantime's `format_rfc3339_millis`
/// writes, without `fmt` (every HAR entry has one, and `fmt` cost more than the rest of the
/// entry's numbers together). A time before 1970 is written as the epoch, one after the end of
/// year 9999 as its last millisecond; `WallClock` never gives either.
pub(crate) fn rfc3339_millis(out: &mut Vec<u8>, time: std::time::SystemTime) {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = if since.as_secs() > MAX_RFC3339_SECS {
        (MAX_RFC3339_SECS, 999)
    } else {
        (since.as_secs(), since.subsec_millis())
    };
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    let mut text = *b"\"0000-00-00T00:00:00.000Z\"";
    let mut put = |at: usize, digits: usize, mut value: u64| {
        for i in (at..at + digits).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(1, 4, year);
    put(6, 2, month);
    put(9, 2, day);
    put(12, 2, second_of_day / 3600);
    put(15, 2, second_of_day / 60 % 60);
    put(18, 2, second_of_day % 60);
    put(21, 3, u64::from(millis));
    out.extend_from_slice(&text);
}

/// (year, month, day) of the proleptic Gregorian calendar, `days` after 1970-01-01: Howard
/// Hinnant's `civil_from_days` (eras of 400 years starting on March 1st), for days >= 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn humantime_millis(time: std::time::SystemTime) -> Vec<u8> {
        format!("\"{}\"", humantime::format_rfc3339_millis(time)).into_bytes()
    }

    #[test]
    fn rfc3339_millis_at_the_edges() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(951_782_400, 999_999_999), "2000-02-29T00:00:00.999Z"),
            (at(1_714_564_800, 123_456_789), "2024-05-01T12:00:00.123Z"),
            (at(4_107_542_399, 1_000_000), "2100-02-28T23:59:59.001Z"),
            (
                at(MAX_RFC3339_SECS, 999_999_999),
                "9999-12-31T23:59:59.999Z",
            ),
            (at(MAX_RFC3339_SECS + 1, 0), "9999-12-31T23:59:59.999Z"),
            (
                UNIX_EPOCH - Duration::from_secs(1),
                "1970-01-01T00:00:00.000Z",
            ),
        ];
        for (time, expected) in cases {
            let mut out = Vec::new();
            rfc3339_millis(&mut out, time);
            assert_eq!(out, format!("\"{expected}\"").into_bytes());
            if time >= UNIX_EPOCH && time <= at(MAX_RFC3339_SECS, 999_999_999) {
                assert_eq!(out, humantime_millis(time), "{expected}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_millis_is_humantimes(secs in 0..=MAX_RFC3339_SECS, nanos in 0..1_000_000_000u32) {
            let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            let mut out = Vec::new();
            rfc3339_millis(&mut out, time);
            proptest::prop_assert_eq!(out, humantime_millis(time));
        }
    }

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

    type BlockLoop = fn(&mut Vec<u8>, &[u8]);

    /// The block loops, each run alone on a whole text: the portable one and, on x86-64, the
    /// SSSE3 one (which the CPUs this runs on have: checked, so it is not skipped unseen).
    fn block_loops() -> Vec<(&'static str, BlockLoop)> {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                ssse3::available(),
                "a CPU without SSSE3 tests only the portable loop"
            );
            vec![("portable", escape_block), ("ssse3", ssse3::escape_block)]
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![("portable", escape_block)]
    }

    fn escaped_by(block_loop: BlockLoop, text: &str) -> Vec<u8> {
        let mut out = vec![b'"'];
        for block in text.as_bytes().chunks(BLOCK) {
            block_loop(&mut out, block);
        }
        out.push(b'"');
        out
    }

    #[test]
    fn every_byte_at_every_offset() {
        // Each escapable (and some not) byte at each position of a 37-byte run, so the
        // 16-byte chunks, the 8-byte word after them and the tail all see it, in every loop;
        // alone, and in a run of quotes (every half then takes the shuffle).
        for (name, block_loop) in block_loops() {
            for b in 0_u8..0x80 {
                for filler in ["x", "\""] {
                    for at in 0..37 {
                        let mut text = filler.repeat(37);
                        text.replace_range(at..=at, char::from(b).encode_utf8(&mut [0; 4]));
                        let expected = serde_escaped(&text);
                        assert_eq!(ours(&text), expected, "{b:#x} at {at}");
                        assert_eq!(
                            escaped_by(block_loop, &text),
                            expected,
                            "{name}: {b:#x} at {at}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_mask_of_quotes_and_backslashes() {
        // All 2^16 patterns of escapes in a chunk, with `"` and `\` both used, then a block
        // of controls only (six bytes each: the room grows past twice the block).
        for (name, block_loop) in block_loops() {
            for mask in 0_u32..1 << 16 {
                let text: String = (0..16)
                    .map(|i| match (mask >> i & 1, i % 3) {
                        (0, _) => char::from(b'a' + i as u8),
                        (_, 0) => '\\',
                        _ => '"',
                    })
                    .collect();
                assert_eq!(
                    escaped_by(block_loop, &text),
                    serde_escaped(&text),
                    "{name}: {mask:#x}"
                );
            }
            let controls: String = (0..3 * BLOCK + 5)
                .map(|i| char::from((i % 32) as u8))
                .collect();
            assert_eq!(
                escaped_by(block_loop, &controls),
                serde_escaped(&controls),
                "{name}"
            );
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

    fn float_millis(ns: u64) -> Vec<u8> {
        let mut out = Vec::new();
        float(&mut out, ns as f64 / 1_000_000.0);
        out
    }

    fn our_millis(ns: u64) -> Vec<u8> {
        let mut out = Vec::new();
        millis(&mut out, ns);
        out
    }

    #[test]
    fn millis_writes_what_float_writes() {
        let mut cases = vec![
            0, 1, 10, 99_999, 100_000, 100_001, 250_000, 1_000_000, 1_000_001,
        ];
        for exponent in 0..20 {
            let power = 10_u64.pow(exponent);
            cases.extend([power - 1, power, power + 1, power.saturating_mul(7) - 3]);
        }
        cases.extend(0..2_000);
        cases.extend([
            999_999_999_999_999,
            1_000_000_000_000_000,
            123_456_789_012_345,
            u64::MAX,
        ]);
        for ns in cases {
            assert_eq!(
                String::from_utf8(our_millis(ns)).unwrap(),
                String::from_utf8(float_millis(ns)).unwrap(),
                "{ns}"
            );
        }
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
        fn millis_agrees_with_float(ns in 0_u64..2_000_000_000_000_000, small in 0_u64..10_000_000) {
            proptest::prop_assert_eq!(our_millis(ns), float_millis(ns));
            proptest::prop_assert_eq!(our_millis(small), float_millis(small));
        }

        #[test]
        fn escaping_agrees_with_serde_json(text in ".*", ascii in "[ -~\\x00-\\x1f]{0,64}") {
            proptest::prop_assert_eq!(ours(&text), serde_escaped(&text));
            proptest::prop_assert_eq!(ours(&ascii), serde_escaped(&ascii));
            for (name, block_loop) in block_loops() {
                proptest::prop_assert_eq!(escaped_by(block_loop, &text), serde_escaped(&text), "{}", name);
                proptest::prop_assert_eq!(escaped_by(block_loop, &ascii), serde_escaped(&ascii), "{}", name);
            }
        }
    }
}
