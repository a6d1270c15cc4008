//! RFC 7541 Appendix C, all of it, and the passive decoder's handling of unknown tables.

use super::*;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode_all(d: &mut Decoder, block: &[u8]) -> (Vec<Decoded<'static>>, BlockInfo) {
    let mut out = Vec::new();
    let info = d.decode_block(block, |f| out.push(f.into_owned())).unwrap();
    (out, info)
}

fn fields(decoded: &[Decoded]) -> Vec<(String, String)> {
    decoded
        .iter()
        .map(|d| match d {
            Decoded::Field(f) => (f.name.to_string(), f.value.to_string()),
            Decoded::Unresolved => ("?".into(), "?".into()),
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn table_of(d: &Decoder) -> Vec<(String, String)> {
    (0..d.table.len())
        .map(|i| match d.table.get(i) {
            table::Lookup::Entry(e) => (
                String::from_utf8(e.name.unwrap().to_vec()).unwrap(),
                String::from_utf8(e.value.to_vec()).unwrap(),
            ),
            other => panic!("entry {i}: {other:?}"),
        })
        .collect()
}

/// One block of an Appendix C sequence: the wire bytes, the header list, and the dynamic table
/// after it (newest first) with its size.
struct Step<'a> {
    wire: &'a str,
    list: &'a [(&'a str, &'a str)],
    table: &'a [(&'a str, &'a str)],
    size: usize,
}

fn run_sequence(max_size: Option<usize>, steps: &[Step<'_>]) {
    let mut d = Decoder::new(65536);
    if let Some(max) = max_size {
        // SETTINGS_HEADER_TABLE_SIZE 256 in C.5/C.6: the decoder's maximum.
        assert!(d.table.set_max_size(max));
    }
    for (i, step) in steps.iter().enumerate() {
        let (decoded, info) = decode_all(&mut d, &hex(step.wire));
        assert_eq!(fields(&decoded), pairs(step.list), "block {i}");
        assert_eq!(info.unresolved, 0);
        assert_eq!(table_of(&d), pairs(step.table), "table after block {i}");
        assert_eq!(d.table.size(), step.size, "table size after block {i}");
        assert!(d.is_known());
    }
}

#[test]
fn c1_integers() {
    // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix; C.1.3: 42 at a boundary.
    for (value, prefix, wire) in [(10, 5, "0a"), (1337, 5, "1f9a0a"), (42, 8, "2a")] {
        let wire = hex(wire);
        assert_eq!(integer(&wire, prefix), Ok((value, wire.len())));
        let mut out = Vec::new();
        put_int(&mut out, 0, prefix, value);
        assert_eq!(out, wire);
    }
}

#[test]
fn c2_1_literal_with_indexing() {
    let mut d = Decoder::new(4096);
    let (decoded, _) = decode_all(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    );
    assert_eq!(fields(&decoded), pairs(&[("custom-key", "custom-header")]));
    assert_eq!(table_of(&d), pairs(&[("custom-key", "custom-header")]));
    assert_eq!(d.table.size(), 55);
}

#[test]
fn c2_2_literal_without_indexing() {
    let mut d = Decoder::new(4096);
    let (decoded, _) = decode_all(&mut d, &hex("040c 2f73 616d 706c 652f 7061 7468"));
    assert_eq!(fields(&decoded), pairs(&[(":path", "/sample/path")]));
    assert!(d.table.is_empty());
}

#[test]
fn c2_3_never_indexed() {
    let mut d = Decoder::new(4096);
    let (decoded, _) = decode_all(&mut d, &hex("1008 7061 7373 776f 7264 0673 6563 7265 74"));
    assert_eq!(fields(&decoded), pairs(&[("password", "secret")]));
    let Decoded::Field(f) = &decoded[0] else {
        panic!()
    };
    assert!(f.never_indexed);
    assert!(d.table.is_empty());
}

#[test]
fn c2_4_indexed() {
    let mut d = Decoder::new(4096);
    let (decoded, _) = decode_all(&mut d, &hex("82"));
    assert_eq!(fields(&decoded), pairs(&[(":method", "GET")]));
    assert!(d.table.is_empty());
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQ_T1: &[(&str, &str)] = &[(":authority", "www.example.com")];
const REQ_T2: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];
const REQ_T3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn c3_requests_without_huffman() {
    run_sequence(
        None,
        &[
            Step {
                wire: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                list: REQ1,
                table: REQ_T1,
                size: 57,
            },
            Step {
                wire: "8286 84be 5808 6e6f 2d63 6163 6865",
                list: REQ2,
                table: REQ_T2,
                size: 110,
            },
            Step {
                wire: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                list: REQ3,
                table: REQ_T3,
                size: 164,
            },
        ],
    );
}

#[test]
fn c4_requests_with_huffman() {
    run_sequence(
        None,
        &[
            Step {
                wire: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                list: REQ1,
                table: REQ_T1,
                size: 57,
            },
            Step {
                wire: "8286 84be 5886 a8eb 1064 9cbf",
                list: REQ2,
                table: REQ_T2,
                size: 110,
            },
            Step {
                wire: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                list: REQ3,
                table: REQ_T3,
                size: 164,
            },
        ],
    );
}

const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOC: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESP1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", DATE1),
    ("location", LOC),
];
const RESP2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", DATE1),
    ("location", LOC),
];
const RESP3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", DATE2),
    ("location", LOC),
    ("content-encoding", "gzip"),
    ("set-cookie", COOKIE),
];
const RESP_T1: &[(&str, &str)] = &[
    ("location", LOC),
    ("date", DATE1),
    ("cache-control", "private"),
    (":status", "302"),
];
/// `:status: 302` was evicted to make room.
const RESP_T2: &[(&str, &str)] = &[
    (":status", "307"),
    ("location", LOC),
    ("date", DATE1),
    ("cache-control", "private"),
];
/// Several entries were evicted.
const RESP_T3: &[(&str, &str)] = &[
    ("set-cookie", COOKIE),
    ("content-encoding", "gzip"),
    ("date", DATE2),
];

#[test]
fn c5_responses_without_huffman_with_eviction() {
    run_sequence(
        Some(256),
        &[
            Step {
                wire: "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 \
                       3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 \
                       7777 2e65 7861 6d70 6c65 2e63 6f6d",
                list: RESP1,
                table: RESP_T1,
                size: 222,
            },
            Step {
                wire: "4803 3330 37c1 c0bf",
                list: RESP2,
                table: RESP_T2,
                size: 222,
            },
            Step {
                wire: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 \
                       3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a \
                       584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 \
                       3630 303b 2076 6572 7369 6f6e 3d31",
                list: RESP3,
                table: RESP_T3,
                size: 215,
            },
        ],
    );
}

#[test]
fn c6_responses_with_huffman_with_eviction() {
    run_sequence(
        Some(256),
        &[
            Step {
                wire: "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 \
                       66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                list: RESP1,
                table: RESP_T1,
                size: 222,
            },
            Step {
                wire: "4883 640e ffc1 c0bf",
                list: RESP2,
                table: RESP_T2,
                size: 222,
            },
            Step {
                wire: "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a \
                       839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 \
                       72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                list: RESP3,
                table: RESP_T3,
                size: 215,
            },
        ],
    );
}

/// The encoder used by tests and benchmarks produces what the decoder reads back, with and
/// without Huffman coding, across many blocks (insertions and evictions).
#[test]
fn encoder_round_trips() {
    for huffman in [false, true] {
        let mut enc = Encoder::new();
        enc.huffman = huffman;
        let mut dec = Decoder::new(4096);
        for i in 0..200 {
            let value = format!("value-{i}-{}", "x".repeat(i % 37));
            let list = [
                (":method", "POST"),
                (":path", "/svc.Echo/Say"),
                ("x-req", value.as_str()),
                ("authorization", "Bearer t0ken"),
                ("x-plain", "same"),
            ];
            let mut block = Vec::new();
            if i == 100 {
                enc.set_max_size(0, &mut block);
                enc.set_max_size(1024, &mut block);
            }
            for (n, v) in list {
                let how = match n {
                    "authorization" => Indexing::Never,
                    "x-plain" => Indexing::Without,
                    _ => Indexing::Incremental,
                };
                enc.field(n.as_bytes(), v.as_bytes(), how, &mut block);
            }
            let (decoded, info) = decode_all(&mut dec, &block);
            assert_eq!(fields(&decoded), pairs(&list), "block {i}");
            assert_eq!(info.unresolved, 0);
            let Decoded::Field(auth) = &decoded[3] else {
                panic!()
            };
            assert!(auth.never_indexed);
        }
    }
}

// ----- passive decoding with an unknown table -----

#[test]
fn unknown_table_never_misattributes() {
    let mut d = Decoder::unknown(65536);
    assert!(!d.is_known());
    let mut enc = Vec::new();
    // A static field, a reference to an old dynamic entry, a new literal that is indexed.
    put_int(&mut enc, 0x80, 7, 2); // :method GET
    put_int(&mut enc, 0x80, 7, 62); // unknown old entry
    put_int(&mut enc, 0x40, 6, 0);
    put_int(&mut enc, 0, 7, 5);
    enc.extend_from_slice(b"x-new");
    put_int(&mut enc, 0, 7, 1);
    enc.extend_from_slice(b"1");
    let (decoded, info) = decode_all(&mut d, &enc);
    assert_eq!(
        fields(&decoded),
        pairs(&[(":method", "GET"), ("?", "?"), ("x-new", "1")])
    );
    assert_eq!(info.unresolved, 1);
    // The new entry is index 62 now; 63 is older than the capture.
    let (decoded, info) = decode_all(&mut d, &[0x80 | 62, 0x80 | 63]);
    assert_eq!(fields(&decoded), pairs(&[("x-new", "1"), ("?", "?")]));
    assert_eq!(info.unresolved, 1);
    assert!(!d.is_known());
}

#[test]
fn literal_with_unknown_name_keeps_indexes_aligned() {
    let mut d = Decoder::unknown(65536);
    let mut block = Vec::new();
    // Literal with incremental indexing whose name is dynamic index 70 (unknown).
    put_int(&mut block, 0x40, 6, 70);
    put_int(&mut block, 0, 7, 3);
    block.extend_from_slice(b"abc");
    // Then a known literal, indexed.
    put_int(&mut block, 0x40, 6, 0);
    put_int(&mut block, 0, 7, 1);
    block.extend_from_slice(b"k");
    put_int(&mut block, 0, 7, 1);
    block.extend_from_slice(b"v");
    let (decoded, info) = decode_all(&mut d, &block);
    assert_eq!(fields(&decoded), pairs(&[("?", "?"), ("k", "v")]));
    assert_eq!(info.unresolved, 1);
    // 62 is k: v, 63 the entry whose name is unknown: unresolved, not guessed.
    let (decoded, _) = decode_all(&mut d, &[0x80 | 62, 0x80 | 63]);
    assert_eq!(fields(&decoded), pairs(&[("k", "v"), ("?", "?")]));
}

#[test]
fn size_update_to_zero_makes_the_table_known() {
    let mut d = Decoder::unknown(65536);
    let mut enc = Encoder::new();
    let mut block = Vec::new();
    enc.set_max_size(0, &mut block);
    enc.set_max_size(4096, &mut block);
    enc.field(b"x-a", b"1", Indexing::Incremental, &mut block);
    decode_all(&mut d, &block);
    assert!(d.is_known());
    // An index past a known table is an error (and the table is forgotten again).
    let mut out = Vec::new();
    assert_eq!(
        d.decode_block(&[0x80 | 64], |f| out.push(f.into_owned())),
        Err(HpackError::InvalidIndex)
    );
    assert!(!d.is_known());
}

#[test]
fn filling_a_table_of_known_size_makes_it_known() {
    let mut d = Decoder::unknown(65536);
    let mut enc = Encoder::new();
    let mut block = Vec::new();
    // A size update (not to 0) tells the maximum but not the contents.
    enc.set_max_size(256, &mut block);
    enc.field(b"x-a", &[b'a'; 100], Indexing::Incremental, &mut block);
    decode_all(&mut d, &block);
    assert!(
        !d.is_known(),
        "135 of 256 bytes known: older entries may remain"
    );
    let mut block = Vec::new();
    enc.field(b"x-b", &[b'b'; 60], Indexing::Incremental, &mut block);
    decode_all(&mut d, &block);
    // 135 + 95 = 230 bytes; no room for an older entry of 32 or more.
    assert!(d.is_known());
}

#[test]
fn size_update_over_the_cap_leaves_the_table_unknown() {
    let mut d = Decoder::new(1024);
    let mut block = Vec::new();
    put_int(&mut block, 0x20, 5, 65536);
    let (_, info) = decode_all(&mut d, &block);
    assert!(info.over_cap);
    assert!(!d.is_known());
    assert_eq!(d.table.max_size(), 1024);
    // Back within the cap: known again once emptied.
    let mut block = Vec::new();
    put_int(&mut block, 0x20, 5, 0);
    put_int(&mut block, 0x20, 5, 512);
    let (_, info) = decode_all(&mut d, &block);
    assert!(!info.over_cap);
    assert!(d.is_known());
}

#[test]
fn malformed_blocks_are_errors_not_panics() {
    let cases: &[(&[u8], HpackError)] = &[
        (&[0x80], HpackError::InvalidIndex),
        (
            &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            HpackError::IntegerOverflow,
        ),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
            HpackError::IntegerOverflow,
        ),
        (&[0x40, 0x05, b'a'], HpackError::Truncated),
        (&[0x7f], HpackError::Truncated),
        (
            &[0x40, 0x81, 0x00, 0x01, b'v'],
            HpackError::Huffman(huffman::HuffmanError::Padding),
        ),
    ];
    for (block, want) in cases {
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        assert_eq!(
            d.decode_block(block, |f| out.push(f.into_owned())),
            Err(*want),
            "{block:02x?}"
        );
        assert!(!d.is_known(), "a failed block leaves the table unknown");
    }
}

#[test]
fn field_debug_hides_values() {
    let f = Field {
        name: "authorization".into(),
        value: "Bearer s3cret".into(),
        never_indexed: true,
        size: 0,
    };
    let text = format!("{f:?}");
    assert!(!text.contains("s3cret"), "{text}");
}
