use super::*;

fn body(data: &[u8]) -> Body {
    Body {
        data: data.to_vec(),
        wire_size: data.len() as u64,
        ..Body::default()
    }
}

/// Redacts `data` sent as `content_type` with the default names; the new bytes and the
/// redacted-list entries.
fn redact_as(content_type: &str, data: &[u8]) -> (Vec<u8>, Vec<String>) {
    redact_with(&BodyFields::default(), content_type, data)
}

fn redact_with(fields: &BodyFields, content_type: &str, data: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = body(data);
    let mut removed = Removed::default();
    fields.redact(
        &Headers::from([("Content-Type", content_type)]),
        &mut b,
        &mut removed,
    );
    (b.data, removed.into_iter().collect())
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Secrets in these tests are written with the letters Q, X and Z only, which nothing else in
/// the samples (nor the marker) uses: any of them in the output is a leak.
fn assert_no_secret_byte(out: &[u8], context: &str) {
    assert!(
        !out.iter().any(|b| matches!(b, b'Q' | b'X' | b'Z')),
        "secret bytes leaked ({context}): {}",
        String::from_utf8_lossy(out)
    );
}

#[test]
fn json_at_any_depth_keeps_everything_else_byte_for_byte() {
    let input = br#"{"user": "alice", "password":"QXZ1",
  "nested": {"deep": [{"client_secret" : "QXZ2"}, {"x": 1}]},
  "list": [[{"Access-Token": "QXZ3", "keep": "a\"b"}]], "n": -1.5e3}"#;
    let (out, names) = redact_as("application/json", input);
    assert_eq!(
        text(&out),
        r#"{"user": "alice", "password":"[REDACTED]",
  "nested": {"deep": [{"client_secret" : "[REDACTED]"}, {"x": 1}]},
  "list": [[{"Access-Token": "[REDACTED]", "keep": "a\"b"}]], "n": -1.5e3}"#
    );
    assert_eq!(
        names,
        strings(&["body:access_token", "body:client_secret", "body:password"])
    );
}

#[test]
fn json_values_of_every_kind_are_replaced_whole() {
    let input = br#"{"password":{"a":"}]\"{","b":[1,{"c":"QXZ"}]},"pwd":12345,"secret":null,"api_key":true,"id_token":["QXZ",{"x":"QXZ"}],"next":1}"#;
    let (out, names) = redact_as("application/json", input);
    assert_eq!(
        text(&out),
        r#"{"password":"[REDACTED]","pwd":"[REDACTED]","secret":"[REDACTED]","api_key":"[REDACTED]","id_token":"[REDACTED]","next":1}"#
    );
    assert_eq!(
        names,
        strings(&[
            "body:api_key",
            "body:id_token",
            "body:password",
            "body:pwd",
            "body:secret"
        ])
    );
}

#[test]
fn json_escaped_and_duplicate_keys() {
    let input = br#"{"pass\u0077ord":"QXZ1","PASSWORD":"QXZ2","password":"QXZ3","refresh\u005ftoken":"QXZ4","a\\password":"keep","\ud83d\ude00":"keep"}"#;
    let (out, names) = redact_as("application/json; charset=utf-8", input);
    assert_eq!(
        text(&out),
        r#"{"pass\u0077ord":"[REDACTED]","PASSWORD":"[REDACTED]","password":"[REDACTED]","refresh\u005ftoken":"[REDACTED]","a\\password":"keep","\ud83d\ude00":"keep"}"#
    );
    assert_eq!(names, strings(&["body:password", "body:refresh_token"]));
}

#[test]
fn json_names_only_match_as_keys() {
    for input in [
        &br#"["password","QXZ"]"#[..],
        br#"{"note":"password","x":"password:QXZ"}"#,
        br#"{"my_password":"QXZ","password_hint":"QXZ","passwords":["QXZ"]}"#,
        br#""password""#,
    ] {
        let (out, names) = redact_as("application/json", input);
        assert_eq!(out, input, "{}", text(input));
        assert!(names.is_empty());
    }
}

#[test]
fn not_json_is_left_as_it_is() {
    for input in [
        &b"password=QXZ"[..],
        br#"{"password" "QXZ"}"#,
        br#"{"password":"QXZ"}}"#,
        br#"{"password":"QXZ"] "#,
        br#"{"password":"Q\qXZ"}"#,
        br#"{"a":tru, "password":"QXZ"}"#,
    ] {
        let (out, names) = redact_as("application/json", input);
        assert_eq!(out, input, "{}", text(input));
        assert!(names.is_empty());
    }
}

#[test]
fn json_sequences_and_structured_suffixes() {
    let input = b"{\"password\":\"QXZ1\"}\n{\"a\":1}\n{\"secret\":\"QXZ2\"}\n";
    for ct in [
        "application/x-ndjson",
        "application/vnd.api+json",
        "application/problem+JSON",
        "text/json",
    ] {
        let (out, _) = redact_as(ct, input);
        assert_eq!(
            text(&out),
            "{\"password\":\"[REDACTED]\"}\n{\"a\":1}\n{\"secret\":\"[REDACTED]\"}\n",
            "{ct}"
        );
    }
}

#[test]
fn other_content_types_and_missing_content_type_are_not_touched() {
    let fields = BodyFields::default();
    for ct in [
        "text/plain",
        "application/octet-stream",
        "application/grpc",
        "text/html",
    ] {
        let (out, names) = redact_as(ct, br#"{"password":"QXZ"}"#);
        assert_eq!(out, br#"{"password":"QXZ"}"#, "{ct}");
        assert!(names.is_empty());
    }
    let mut b = body(br#"{"password":"QXZ"}"#);
    let mut removed = Removed::default();
    fields.redact(&Headers::new(), &mut b, &mut removed);
    assert_eq!(b.data, br#"{"password":"QXZ"}"#);
    // Undecodable content: `data` holds the encoded bytes, which are not parsed.
    let mut b = body(br#"{"password":"QXZ"}"#);
    b.decode_error = Some("unsupported content coding".into());
    fields.redact(
        &Headers::from([("content-type", "application/json")]),
        &mut b,
        &mut removed,
    );
    assert_eq!(b.data, br#"{"password":"QXZ"}"#);
    assert!(removed.is_empty());
}

#[test]
fn nothing_matching_keeps_the_same_buffer() {
    let fields = BodyFields::default();
    for (ct, data) in [
        (
            "application/json",
            &br#"{"user":"alice","items":[1,2,{"a":"b"}]}"#[..],
        ),
        ("application/json", br#"{"passport":"x","a":"\u00e9"}"#),
        (
            "application/x-www-form-urlencoded",
            b"a=1&b=%20x&passport=2",
        ),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--b--\r\n",
        ),
    ] {
        let mut b = body(data);
        let before = b.data.as_ptr();
        let mut removed = Removed::default();
        fields.redact(&Headers::from([("Content-Type", ct)]), &mut b, &mut removed);
        assert_eq!(b.data.as_ptr(), before, "{ct}");
        assert_eq!(b.data, data);
        assert_eq!(b.decoded_size, None);
        assert!(removed.is_empty());
    }
}

#[test]
fn decoded_size_keeps_the_size_before_redaction() {
    let data = br#"{"password":"QXZ"}"#;
    let mut b = body(data);
    let mut removed = Removed::default();
    BodyFields::default().redact(
        &Headers::from([("Content-Type", "application/json")]),
        &mut b,
        &mut removed,
    );
    assert_eq!(b.decoded_size, Some(data.len() as u64));
    assert_eq!(b.decoded_size(), data.len() as u64);
    // Redacting again changes nothing, the size before the first redaction stays.
    let once = b.clone();
    BodyFields::default().redact(
        &Headers::from([("Content-Type", "application/json")]),
        &mut b,
        &mut removed,
    );
    assert_eq!(b, once);
    // Same length before and after: nothing to record.
    let mut b = body(br#"{"pwd":"QXZQXZQXZQ"}"#);
    BodyFields::default().redact(
        &Headers::from([("Content-Type", "application/json")]),
        &mut b,
        &mut removed,
    );
    assert_eq!(b.data, br#"{"pwd":"[REDACTED]"}"#);
    assert_eq!(b.decoded_size, None);
}

/// The capture limit can cut a body anywhere: at every cut point of this sample, no byte of a
/// secret is left, and what was not cut is still there.
#[test]
fn truncated_json_at_every_cut_point() {
    let sample = br#"{"user":"alice","password":"QXZQXZ","pass\u0077ord":"QXZ\"QXZ","nested":[{"api-key":{"k":["QXZ",{"z":"QXZ"}]}},{"pwd":-12},{"n":1,"refresh_token":"QXZ\u0051"}],"tail":"ok"}"#;
    // The digits of `-12` are a secret too: make them recognisable.
    let sample = String::from_utf8_lossy(sample).replace("-12", "\"QQ\"");
    let sample = sample.as_bytes();
    let fields = BodyFields::default();
    for cut in 0..=sample.len() {
        let prefix = &sample[..cut];
        let mut b = body(prefix);
        b.truncated = cut < sample.len();
        let mut removed = Removed::default();
        fields.redact(
            &Headers::from([("Content-Type", "application/json")]),
            &mut b,
            &mut removed,
        );
        assert_no_secret_byte(&b.data, &format!("cut at {cut}"));
        // Before the first secret, the prefix is kept as it is.
        if cut <= 27 {
            assert_eq!(b.data, prefix, "cut at {cut}");
        }
    }
    let (whole, names) = redact_with(&fields, "application/json", sample);
    assert_eq!(
        text(&whole),
        r#"{"user":"alice","password":"[REDACTED]","pass\u0077ord":"[REDACTED]","nested":[{"api-key":"[REDACTED]"},{"pwd":"[REDACTED]"},{"n":1,"refresh_token":"[REDACTED]"}],"tail":"ok"}"#
    );
    assert_eq!(
        names,
        strings(&[
            "body:api_key",
            "body:password",
            "body:pwd",
            "body:refresh_token"
        ])
    );
}

#[test]
fn a_value_cut_right_after_its_start_does_not_leak() {
    let (out, names) = redact_as("application/json", br#"{"password":"abc"#);
    assert_eq!(text(&out), r#"{"password":"[REDACTED]""#);
    assert_eq!(names, strings(&["body:password"]));
    let (out, _) = redact_as("application/json", br#"{"password":"abc\u00"#);
    assert_eq!(text(&out), r#"{"password":"[REDACTED]""#);
    let (out, _) = redact_as("application/json", br#"{"password":{"a":"abc"#);
    assert_eq!(text(&out), r#"{"password":"[REDACTED]""#);
    let (out, _) = redact_as("application/json", br#"{"password":12"#);
    assert_eq!(text(&out), r#"{"password":"[REDACTED]""#);
}

#[test]
fn deep_nesting_past_the_inline_stack() {
    let depth = 1000;
    let mut input = "[".repeat(depth);
    input.push_str(r#"{"secret":"QXZ"}"#);
    input.push_str(&"]".repeat(depth));
    let (out, names) = redact_as("application/json", input.as_bytes());
    assert_no_secret_byte(&out, "deep");
    assert_eq!(names, strings(&["body:secret"]));
    assert_eq!(out.len(), input.len() - 3 + MARKER.len());
}

#[test]
fn form_names_are_decoded_before_matching() {
    let input = b"a=1&password=QXZ&Pass%77ord=QXZ+QXZ&client-secret=QXZ%21&API%5FKEY=QXZ&api+key=keep&x_password=keep&b=%zz&password&pwd=&access_token=QXZ&c=3";
    let (out, names) = redact_as("application/x-www-form-urlencoded; charset=UTF-8", input);
    assert_eq!(
        text(&out),
        "a=1&password=%5BREDACTED%5D&Pass%77ord=%5BREDACTED%5D&client-secret=%5BREDACTED%5D&API%5FKEY=%5BREDACTED%5D&api+key=keep&x_password=keep&b=%zz&password&pwd=%5BREDACTED%5D&access_token=%5BREDACTED%5D&c=3"
    );
    assert_eq!(
        names,
        strings(&[
            "body:access_token",
            "body:api_key",
            "body:client_secret",
            "body:password",
            "body:pwd"
        ])
    );
}

#[test]
fn truncated_form_at_every_cut_point() {
    let sample = b"user=alice&password=QXZQXZ&next=%2Fhome&client_secret=QXZ%51&tail=1";
    for cut in 0..=sample.len() {
        let (out, _) = redact_as("application/x-www-form-urlencoded", &sample[..cut]);
        assert_no_secret_byte(&out, &format!("cut at {cut}"));
    }
}

fn multipart_sample() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"preamble\r\n--b0undary7f\r\n");
    m.extend_from_slice(b"Content-Disposition: form-data; name=\"user\"\r\n\r\nalice\r\n");
    m.extend_from_slice(b"--b0undary7f\r\n");
    m.extend_from_slice(b"content-disposition: form-data; name=\"Password\"\r\n");
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nQXZ\r\nQXZ\r\n");
    m.extend_from_slice(b"--b0undary7f\r\n");
    m.extend_from_slice(b"Content-Disposition: form-data; name=\"api\\-key\"; x=\"a;b\"\r\n\r\n");
    m.extend_from_slice(b"QXZ\r\n--b0undary7f\r\n");
    m.extend_from_slice(b"Content-Disposition: form-data; filename=\"a.txt\"; name=\"upload\"\r\n");
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\npassword=keep\r\n");
    m.extend_from_slice(b"--b0undary7f\r\n");
    m.extend_from_slice(
        b"Content-Disposition: form-data; name=\"private_key\"; filename=\"k.pem\"\r\n\r\n",
    );
    m.extend_from_slice(b"-----BEGIN QXZ-----\r\n--b0undary7f\r\n");
    m.extend_from_slice(
        b"Content-Disposition: form-data; name*=UTF-8''pass%77ord; name=\"z\"\r\n\r\nQXZ\r\n",
    );
    m.extend_from_slice(b"--b0undary7f--\r\nepilogue");
    m
}

#[test]
fn multipart_form_fields_and_file_parts() {
    let input = multipart_sample();
    let (out, names) = redact_as(
        "multipart/form-data; charset=utf-8; boundary=\"b0undary7f\"",
        &input,
    );
    let want = String::from_utf8_lossy(&input)
        .replace("QXZ\r\nQXZ", "[REDACTED]")
        .replace("-----BEGIN QXZ-----", "[REDACTED]")
        .replace("QXZ", "[REDACTED]");
    assert_eq!(text(&out), want);
    assert!(text(&out).contains("password=keep"));
    assert_eq!(
        names,
        strings(&["body:api_key", "body:password", "body:private_key"])
    );
}

#[test]
fn multipart_without_its_boundary_is_left_alone() {
    let input = multipart_sample();
    for ct in ["multipart/form-data", "multipart/form-data; boundary=other"] {
        let (out, names) = redact_as(ct, &input);
        assert_eq!(out, input, "{ct}");
        assert!(names.is_empty());
    }
}

#[test]
fn truncated_multipart_at_every_cut_point() {
    let sample = multipart_sample();
    for cut in 0..=sample.len() {
        let (out, _) = redact_as("multipart/form-data; boundary=b0undary7f", &sample[..cut]);
        assert_no_secret_byte(&out, &format!("cut at {cut}"));
    }
}

fn grpc_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn grpc_json_messages_are_redacted_and_reframed() {
    let mut input = grpc_frame(0, br#"{"user":"a","password":"QXZQXZQXZQXZ"}"#);
    input.extend(grpc_frame(1, br#"compressed password QXZ"#));
    input.extend(grpc_frame(0, br#"{"ok":true}"#));
    for ct in ["application/grpc+json", "application/grpc-web+json"] {
        let (out, names) = redact_as(ct, &input);
        let mut want = grpc_frame(0, br#"{"user":"a","password":"[REDACTED]"}"#);
        want.extend(grpc_frame(1, br#"compressed password QXZ"#));
        want.extend(grpc_frame(0, br#"{"ok":true}"#));
        assert_eq!(out, want, "{ct}");
        assert_eq!(names, strings(&["body:password"]));
    }
    // gRPC-Web text is base64: not parsed.
    let (out, _) = redact_as("application/grpc-web-text+json", &input);
    assert_eq!(out, input);
    // Cut inside the first message: the declared length shrinks by what redaction removed.
    let cut = &input[..30];
    let (out, _) = redact_as("application/grpc+json", cut);
    assert_no_secret_byte(&out, "cut grpc");
    let declared = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
    // 38 declared; the 2 bytes of the cut value (`"Q`) became the 12-byte marker.
    assert_eq!(declared, 38 - 2 + 12);
}

#[test]
fn configured_names_and_defaults_off() {
    let extra = strings(&[" Session-Key ", "pin"]);
    let only_extra = BodyFields::new(&extra, false);
    assert_eq!(only_extra.names(), ["pin", "session_key"]);
    let input = br#"{"password":"visible","session_key":"QXZ","PIN":1234}"#;
    let (out, names) = redact_with(&only_extra, "application/json", input);
    assert_eq!(
        text(&out),
        r#"{"password":"visible","session_key":"[REDACTED]","PIN":"[REDACTED]"}"#
    );
    assert_eq!(names, strings(&["body:pin", "body:session_key"]));
    let both = BodyFields::new(&extra, true);
    assert_eq!(both.names().len(), DEFAULT_BODY_FIELDS.len() + 2);
    let (out, _) = redact_with(&both, "application/json", input);
    assert!(!text(&out).contains("visible"));
    let none = BodyFields::new(&[], false);
    let (out, names) = redact_with(&none, "application/json", input);
    assert_eq!(out, input);
    assert!(names.is_empty());
}

#[test]
fn debug_shows_names_not_bodies() {
    let debug = format!("{:?}", BodyFields::default());
    assert!(debug.contains("client_secret"), "{debug}");
}

/// A JSON value built from keys that are (or nearly are) configured names, spelled with
/// escapes and case changes, and whitespace where JSON allows it.
fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let key = prop_oneof![
        Just("password".to_owned()),
        Just("pass\\u0077ord".to_owned()),
        Just("PassWord".to_owned()),
        Just("api-key".to_owned()),
        Just("a\\\\".to_owned()),
        Just("x\\\"y".to_owned()),
        Just("\\\\\\\"".to_owned()),
        Just("pwd".to_owned()),
        Just("sort_key".to_owned()),
        "[a-z_:\" ]{0,12}".prop_map(|s| s.replace('\\', "").replace('"', "\\\"")),
    ];
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r\n  ")];
    let leaf = prop_oneof![
        Just("1".to_owned()),
        Just("null".to_owned()),
        Just("\"a:b\"".to_owned()),
        Just("\"\\\":\"".to_owned()),
        Just("\"password\"".to_owned()),
        "[a-z:\\\\\" ]{0,8}"
            .prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((key.clone(), ws.clone(), ws.clone(), inner), 0..5).prop_map(
                |fields| {
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(k, a, b, v)| format!("{a}\"{k}\"{b}:{a}{v}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
            ),
        ]
    })
}

proptest::proptest! {
    /// The JSON pre-check never says no to a body the scanner would redact, whole or cut
    /// anywhere, and on bytes that are not JSON at all.
    #[test]
    fn json_pre_check_never_hides_a_key_the_scanner_redacts(
        value in json_value(),
        cut in 0usize..400,
        noise in proptest::collection::vec(
            proptest::sample::select(b"{}[],:\"\\ \npaswordPAS-_u07".to_vec()), 0..64),
    ) {
        let fields = BodyFields::default();
        let data = value.as_bytes();
        for data in [data, &data[..cut.min(data.len())], &noise[..]] {
            let mut hits = Vec::new();
            if fields.redact_json(data, &mut hits).is_some() {
                proptest::prop_assert!(
                    fields.json_might_match(data),
                    "the pre-check said no to {}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
}

#[test]
fn json_pre_check_looks_at_keys_only() {
    let fields = BodyFields::default();
    for (data, want) in [
        (&br#"{"password": 1}"#[..], true),
        (br#"{"pass\u0077ord"   :1}"#, true),
        (br#"{"a\\":{"PWD"  :1}}"#, true),
        (br#"{"x":"password","y":"a:b","sort_key":1}"#, false),
        (br#"{"note":"\"password\":"}"#, false),
        (br#"["password", "password" , "secret"]"#, false),
        (br#"{"my_password":1,"passwords":2}"#, false),
        (b"", false),
        (b":::\"", false),
    ] {
        assert_eq!(fields.json_might_match(data), want, "{}", text(data));
    }
}
