//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B).
//!
//! Decoding walks the code tree four bits at a time through a table of 256 states (one per
//! inner node of the tree) by 16 nibbles, built once from the code table of Appendix B. Since
//! the shortest code is five bits long, a nibble completes at most one symbol.

use std::sync::OnceLock;

/// Why a Huffman-coded string does not decode (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The string contains the EOS symbol.
    #[error("EOS symbol in a Huffman-coded string")]
    Eos,
    /// The padding is longer than 7 bits or is not the most significant bits of EOS.
    #[error("invalid Huffman padding")]
    Padding,
}

/// (code, bit length) of symbols 0..=255 and EOS (256), RFC 7541 Appendix B.
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

const EOS: u16 = 256;

/// One transition: `next` state, and the symbol completed on the way, if any.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    /// 0: none; 1: `sym` was completed; 2: EOS was reached (an error).
    emit: u8,
    sym: u8,
}

struct DecodeTable {
    steps: Vec<[Step; 16]>,
    /// Whether input may end in this state: the bits read since the last symbol are all ones
    /// and fewer than eight (a prefix of EOS used as padding).
    accepting: Vec<bool>,
}

fn table() -> &'static DecodeTable {
    static TABLE: OnceLock<DecodeTable> = OnceLock::new();
    TABLE.get_or_init(build)
}

/// A child in the code tree: an inner node or a symbol.
#[derive(Clone, Copy)]
enum Child {
    Inner(u8),
    Leaf(u16),
    Missing,
}

fn build() -> DecodeTable {
    // Inner nodes of the code tree; the code is complete (Kraft sum 1), so there are 256.
    let mut nodes: Vec<[Child; 2]> = vec![[Child::Missing; 2]];
    // (depth, all bits ones) of each inner node.
    let mut shape: Vec<(u8, bool)> = vec![(0, true)];
    for (sym, &(code, len)) in (0u16..).zip(CODES.iter()) {
        let mut node = 0usize;
        for i in (0..len).rev() {
            let bit = usize::from((code >> i) & 1 == 1);
            if i == 0 {
                nodes[node][bit] = Child::Leaf(sym);
                break;
            }
            node = match nodes[node][bit] {
                Child::Inner(n) => usize::from(n),
                _ => {
                    let id = nodes.len();
                    nodes.push([Child::Missing; 2]);
                    let (depth, ones) = shape[node];
                    shape.push((depth + 1, ones && bit == 1));
                    // 256 inner nodes at most (a complete binary tree with 257 leaves).
                    nodes[node][bit] = Child::Inner(u8::try_from(id).unwrap_or(u8::MAX));
                    id
                }
            };
        }
    }
    let steps = (0..nodes.len())
        .map(|state| {
            let mut row = [Step::default(); 16];
            for (nibble, step) in row.iter_mut().enumerate() {
                let mut node = state;
                for i in (0..4).rev() {
                    let bit = (nibble >> i) & 1;
                    match nodes[node][bit] {
                        Child::Inner(n) => node = usize::from(n),
                        Child::Leaf(EOS) | Child::Missing => {
                            step.emit = 2;
                            break;
                        }
                        Child::Leaf(sym) => {
                            step.emit = 1;
                            step.sym = u8::try_from(sym).unwrap_or(0);
                            node = 0;
                        }
                    }
                }
                step.next = u8::try_from(node).unwrap_or(0);
            }
            row
        })
        .collect();
    let accepting = shape
        .iter()
        .map(|&(depth, ones)| ones && depth < 8)
        .collect();
    DecodeTable { steps, accepting }
}

/// Appends the decoding of `src` to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = table();
    // Decoded strings are at most 8/5 of the coded length.
    dst.reserve(src.len() + src.len() / 2);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = t.steps[state][usize::from(nibble)];
            match step.emit {
                0 => {}
                1 => dst.push(step.sym),
                _ => return Err(HuffmanError::Eos),
            }
            state = usize::from(step.next);
        }
    }
    if t.accepting[state] {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

/// Appends the Huffman coding of `src` to `dst`, padded with ones (RFC 7541 §5.2).
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut bits: u64 = 0;
    let mut n: u32 = 0;
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        bits = (bits << len) | u64::from(code);
        n += u32::from(len);
        while n >= 8 {
            n -= 8;
            dst.push((bits >> n) as u8);
        }
    }
    if n > 0 {
        dst.push(((bits << (8 - n)) | (0xff >> n)) as u8);
    }
}

/// Length of the Huffman coding of `src`, in bytes.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc_examples() {
        // RFC 7541 C.4.1 and C.4.2.
        for (coded, text) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
        ] {
            let mut out = Vec::new();
            decode(&hex(coded), &mut out).unwrap();
            assert_eq!(out, text.as_bytes());
            let mut enc = Vec::new();
            encode(text.as_bytes(), &mut enc);
            assert_eq!(enc, hex(coded));
            assert_eq!(encoded_len(text.as_bytes()), enc.len());
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        let mut out = Vec::new();
        decode(&enc, &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos_are_errors() {
        // '0' is 00000 (5 bits); padding with zeros is invalid.
        assert_eq!(decode(&[0x00], &mut Vec::new()), Err(HuffmanError::Padding));
        // Eight bits of padding (a whole 0xff byte after a complete symbol) is too long.
        assert_eq!(
            decode(&[0x07, 0xff], &mut Vec::new()),
            Err(HuffmanError::Padding)
        );
        // EOS: 30 ones.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new()),
            Err(HuffmanError::Eos)
        );
        assert_eq!(decode(&[], &mut Vec::new()), Ok(()));
    }
}
