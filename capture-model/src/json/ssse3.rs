//! The escaper's block loop with SSSE3 (x86-64): sixteen bytes tested with three vector
//! compares, and a half with quotes or backslashes expanded with one byte shuffle.
//!
//! For eight bytes whose escapes are all `"` or `\` (two bytes each, the second the byte
//! itself), the output is the bytes with a backslash put before each of those: with the eight
//! bytes in the low half of a vector and backslashes in the high half, [`SHUFFLE`] gives, for
//! each 8-bit mask of the bytes to escape, the indices that pick them in order, and the
//! output length is 8 plus the mask's popcount. One table load, one `pshufb`, one 16-byte
//! store and one add, with no branch per escape: JSON bodies have a quote every few bytes.
//! Controls are rare in text; a half that has one goes through the portable table
//! ([`super::expand`]).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, _mm_cmpeq_epi8, _mm_cvtsi128_si64, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
    _mm_set_epi64x, _mm_set1_epi8, _mm_shuffle_epi8, _mm_unpackhi_epi64, _mm_unpacklo_epi64,
};

use super::{expand, needs_escape, word};

/// For each mask of the bytes to escape in eight, the `pshufb` indices that write them with a
/// backslash (index 8: the high half holds backslashes) before each one flagged.
static SHUFFLE: [[u8; 16]; 256] = shuffle_table();

const fn shuffle_table() -> [[u8; 16]; 256] {
    let mut table = [[0x80_u8; 16]; 256];
    let mut mask = 0;
    while mask < 256 {
        let mut i = 0;
        let mut p = 0;
        while i < 8 {
            if mask >> i & 1 == 1 {
                table[mask][p] = 8;
                p += 1;
            }
            table[mask][p] = i as u8;
            p += 1;
            i += 1;
        }
        mask += 1;
    }
    table
}

/// Room kept after the output position for one sixteen-byte chunk: two halves of controls
/// written `\u00XX` (48 bytes each) and the last 8-byte store of the table expansion.
const ROOM: usize = 128;

/// Whether this CPU runs [`escape_block_ssse3`].
#[inline]
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("popcnt")
}

/// Appends `block` escaped, with SSSE3 when the CPU has it, else with the portable loop.
#[inline]
pub(super) fn escape_block(out: &mut Vec<u8>, block: &[u8]) {
    if available() {
        // SAFETY: the CPU has SSSE3 and POPCNT, the features the function is compiled for
        // (checked just above); it has no other requirement.
        unsafe { escape_block_ssse3(out, block) }
    } else {
        super::escape_block(out, block);
    }
}

/// [`super::escape_block`] sixteen bytes at a time. Callable only where the CPU has SSSE3 and
/// POPCNT; everything in it is safe Rust.
#[target_feature(enable = "ssse3,popcnt")]
pub(super) fn escape_block_ssse3(out: &mut Vec<u8>, block: &[u8]) {
    let start = out.len();
    out.resize(start + block.len() * 2 + ROOM, 0);
    let mut pos = start;
    let quote = _mm_set1_epi8(b'"'.cast_signed());
    let backslash = _mm_set1_epi8(b'\\'.cast_signed());
    let last_control = _mm_set1_epi8(0x1f);
    let mut chunks = block.chunks_exact(16);
    for chunk in &mut chunks {
        if out.len() - pos < ROOM {
            // Controls took more than twice their room: enough for the rest at worst.
            out.resize(pos + block.len() * 6 + ROOM, 0);
        }
        let Ok(window) = <&mut [u8; ROOM]>::try_from(&mut out[pos..pos + ROOM]) else {
            unreachable!("the window is ROOM bytes long");
        };
        let (low, high) = (word(&chunk[..8]), word(&chunk[8..]));
        let v = _mm_set_epi64x(high.cast_signed(), low.cast_signed());
        let quotes = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        let controls = _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v);
        let quotes = _mm_movemask_epi8(quotes).cast_unsigned();
        if _mm_movemask_epi8(controls) != 0 {
            let p = expand(&mut window[..64], &chunk[..8]);
            pos += p + expand(&mut window[p..p + 64], &chunk[8..]);
        } else if quotes == 0 {
            window[..16].copy_from_slice(chunk);
            pos += 16;
        } else {
            let p = shuffle(window, _mm_unpacklo_epi64(v, backslash), quotes & 0xff);
            pos += p + shuffle(
                &mut window[p..],
                _mm_unpackhi_epi64(v, backslash),
                quotes >> 8,
            );
        }
    }
    let mut tail = chunks.remainder();
    if out.len() - pos < ROOM {
        out.resize(pos + ROOM, 0);
    }
    if tail.len() >= 8 {
        let chunk = &tail[..8];
        if needs_escape(word(chunk)) {
            pos += expand(&mut out[pos..pos + 64], chunk);
        } else {
            out[pos..pos + 8].copy_from_slice(chunk);
            pos += 8;
        }
        tail = &tail[8..];
    }
    pos += expand(&mut out[pos..pos + 64], tail);
    out.truncate(pos);
}

/// Writes the eight bytes in the low half of `source` into `window`, each one flagged in
/// `mask` after a backslash (the high half of `source`); returns the length written.
#[inline]
#[target_feature(enable = "ssse3,popcnt")]
fn shuffle(window: &mut [u8], source: __m128i, mask: u32) -> usize {
    let entry = &SHUFFLE[(mask & 0xff) as usize];
    let indices = _mm_set_epi64x(
        word(&entry[8..]).cast_signed(),
        word(&entry[..8]).cast_signed(),
    );
    let written = _mm_shuffle_epi8(source, indices);
    let low = _mm_cvtsi128_si64(written).cast_unsigned();
    let high = _mm_cvtsi128_si64(_mm_unpackhi_epi64(written, written)).cast_unsigned();
    window[..8].copy_from_slice(&low.to_le_bytes());
    window[8..16].copy_from_slice(&high.to_le_bytes());
    8 + (mask & 0xff).count_ones() as usize
}
