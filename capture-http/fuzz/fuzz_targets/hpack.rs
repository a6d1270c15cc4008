//! Fuzzes the HPACK decoder (RFC 7541) on its own: a sequence of header blocks decoded by one
//! decoder whose table is bounded by a fuzzer-chosen cap. It must never panic, never hold
//! more than the cap, and what it decodes must survive a round trip: the fields of each
//! block, re-encoded by the crate's encoder (indexing as the fuzzer chooses, Huffman or not)
//! and decoded by a second decoder, come back the same.
//!
//! Input layout: `flags`, a u16 table cap, then blocks, each a u16 length and its bytes.
//! Flag 1: the first decoder starts with an unknown table (a connection joined mid-way).
//! Flag 2: the encoder Huffman-codes strings. Flags 4, 8: how fields are re-indexed.
#![no_main]

use capture_http::http2::hpack::{Decoded, Decoder, Encoder, Indexing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((cap, mut rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let cap = usize::from(u16::from_le_bytes(*cap));
    let mut decoder = if flags & 1 != 0 {
        Decoder::unknown(cap)
    } else {
        Decoder::new(cap)
    };
    let mut encoder = Encoder::new();
    encoder.huffman = flags & 2 != 0;
    // The second decoder's cap covers the encoder's default table (4096).
    let mut again = Decoder::new(4096);
    let mut i = 0usize;
    while let Some((len, r)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(r.len());
        let (block, r) = r.split_at(len);
        rest = r;
        let mut fields = Vec::new();
        let mut unresolved = 0usize;
        let result = decoder.decode_block(block, |d| match d {
            Decoded::Field(f) => fields.push(f.into_owned()),
            Decoded::Unresolved => unresolved += 1,
        });
        let table = decoder.table();
        assert!(
            table.size() <= table.max_size(),
            "{} > {}",
            table.size(),
            table.max_size()
        );
        assert!(table.max_size() <= cap, "{} > cap {cap}", table.max_size());
        if let Ok(info) = result {
            assert_eq!(info.unresolved, unresolved);
        }
        // `size` counts the octets as sent; a name or value that is not UTF-8 is shown with
        // U+FFFD (3 bytes for each bad byte), so the strings are never shorter.
        for f in &fields {
            assert!(f.size <= f.name.len() + f.value.len() + 32);
        }
        let mut encoded = Vec::new();
        for f in &fields {
            // A never-indexed field must stay never-indexed (RFC 7541 §6.2.3); the others are
            // indexed or not as the flags and the field's position say.
            let how = if f.never_indexed {
                Indexing::Never
            } else if ((flags >> 2) & 3).wrapping_add(i as u8) % 3 == 0 {
                Indexing::Without
            } else {
                Indexing::Incremental
            };
            encoder.field(f.name.as_bytes(), f.value.as_bytes(), how, &mut encoded);
            i += 1;
        }
        let mut back = Vec::new();
        let info = again
            .decode_block(&encoded, |d| match d {
                Decoded::Field(f) => back.push(f.into_owned()),
                Decoded::Unresolved => panic!("round trip: unresolved field"),
            })
            .expect("the encoder's block decodes");
        assert_eq!(info.unresolved, 0);
        // Sizes are compared only for what the strings hold (see above).
        let shown = |f: &[capture_http::http2::hpack::Field<'static>]| {
            f.iter()
                .map(|f| (f.name.clone(), f.value.clone(), f.never_indexed))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(&back),
            shown(&fields),
            "round trip changed the fields"
        );
    }
});
