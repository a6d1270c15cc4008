//! gRPC over HTTP/2 (the gRPC "PROTOCOL-HTTP2" spec) and gRPC-Web ("PROTOCOL-WEB"): the
//! method from `:path`, the outcome from `grpc-status`/`grpc-message`, and the body as
//! length-prefixed messages.
//!
//! Bodies are written as the messages re-framed: for each message a 5-byte prefix (a flag
//! byte, then the payload length as a big-endian u32) and the payload, exactly the gRPC wire
//! framing. A compressed message (flag 1) whose `grpc-encoding` is decodable (`gzip`,
//! `deflate`) is written decompressed with flag 0 and its new length; one that is not stays as
//! it was (flag 1). Messages are never merged or split, so the body is lossless and any gRPC
//! message reader decodes it. A gRPC-Web trailer frame (flag 0x80) is moved to the trailers.

use crate::body::decode_content;
use capture_model::exchange::{Body, Grpc, Headers, header_value};

/// `application/grpc`, `application/grpc+proto`, `application/grpc-web+json`, ...
pub fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.trim_start();
        ct.len() >= 16 && ct.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

/// gRPC-Web's binary forms (`application/grpc-web`, `+proto`, ...); `-text` (base64) is not
/// re-framed.
pub fn is_grpc_web(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.trim_start().to_ascii_lowercase();
        ct.starts_with("application/grpc-web") && !ct.starts_with("application/grpc-web-text")
    })
}

/// Service and method from a gRPC `:path` (`/package.Service/Method`).
pub fn method_of(path: &str) -> (String, String) {
    let path = path.split('?').next().unwrap_or("");
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.rsplit_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (String::new(), trimmed.to_owned()),
    }
}

/// `grpc-message` is percent-encoded UTF-8 (bytes outside 0x20..=0x7e, and `%`); a bad
/// escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(byte) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The outcome of a call: status and message from the trailers, or from the headers of a
/// trailers-only response.
pub fn detail(path: &str, response: Option<(&Headers, &Headers)>) -> Grpc {
    let (service, method) = method_of(path);
    let (status, message) = match response {
        Some((headers, trailers)) => {
            let field = |name| header_value(trailers, name).or_else(|| header_value(headers, name));
            (
                field("grpc-status").and_then(|s| s.trim().parse().ok()),
                field("grpc-message").map(percent_decode),
            )
        }
        None => (None, None),
    };
    Grpc {
        service,
        method,
        status,
        message,
    }
}

/// A captured gRPC body, re-framed (see the module docs).
#[derive(Debug, Default)]
pub struct Messages {
    pub body: Body,
    /// Trailers found in a gRPC-Web trailer frame.
    pub web_trailers: Headers,
    /// The bytes did not follow the length-prefixed framing (kept as captured from there).
    pub framing_error: bool,
}

/// Splits `raw` (the DATA payloads of one direction, as captured, cut at `max` bytes if
/// `cut`) into messages. `complete` is false when bytes are missing (cap, gap).
pub fn messages(
    raw: Vec<u8>,
    wire_size: u64,
    complete: bool,
    encoding: Option<&str>,
    web: bool,
    max: usize,
) -> Messages {
    let encoding = encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity");
    // One pass over the prefixes first: most bodies need no rewriting at all.
    let mut rewrite = false;
    let mut framing_error = false;
    let mut at = 0usize;
    while let Some(prefix) = raw.get(at..at + 5) {
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        match prefix[0] {
            0 => {}
            1 => rewrite |= encoding.is_some(),
            0x80 | 0x81 if web => rewrite = true,
            _ => {
                framing_error = true;
                break;
            }
        }
        at = at.saturating_add(5).saturating_add(len);
    }
    if !framing_error && complete && at != raw.len() {
        // A complete body ends on a message boundary.
        framing_error = true;
    }
    let truncated = !complete;
    if !rewrite {
        return Messages {
            body: Body {
                data: raw,
                wire_size,
                truncated,
                decoded_from: None,
                decode_error: None,
                decoded_size: None,
            },
            web_trailers: Headers::new(),
            framing_error,
        };
    }
    let mut out = Vec::with_capacity(raw.len().min(max));
    let mut web_trailers = Headers::new();
    let mut decoded_any = false;
    let mut decode_error = None;
    let mut cut = false;
    let mut at = 0usize;
    while at < raw.len() {
        let Some(prefix) = raw.get(at..at + 5) else {
            push_capped(&mut out, &raw[at..], max, &mut cut);
            break;
        };
        let flag = prefix[0];
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        let end = at.saturating_add(5).saturating_add(len);
        let whole = end <= raw.len();
        let payload = &raw[at + 5..end.min(raw.len())];
        match flag {
            0x80 | 0x81 if web && whole => {
                // PROTOCOL-WEB: trailers as an HTTP/1 header block (flag 0x81: compressed).
                let block = if flag == 0x81 {
                    decode_content(encoding.as_deref(), payload, true, max).data
                } else {
                    payload.to_vec()
                };
                web_trailers.append(&mut parse_web_trailers(&block));
            }
            1 if whole && encoding.is_some() => {
                let d = decode_content(encoding.as_deref(), payload, true, max);
                if d.decode_error.is_none() && !d.truncated {
                    decoded_any = true;
                    let n = u32::try_from(d.data.len()).unwrap_or(u32::MAX);
                    push_capped(&mut out, &[0], max, &mut cut);
                    push_capped(&mut out, &n.to_be_bytes(), max, &mut cut);
                    push_capped(&mut out, &d.data, max, &mut cut);
                } else {
                    decode_error.get_or_insert(
                        d.decode_error
                            .unwrap_or_else(|| "message larger than --max-body-bytes".into()),
                    );
                    push_capped(&mut out, &raw[at..end], max, &mut cut);
                }
            }
            0 | 1 | 0x80 | 0x81 => {
                push_capped(&mut out, &raw[at..end.min(raw.len())], max, &mut cut)
            }
            _ => {
                push_capped(&mut out, &raw[at..], max, &mut cut);
                break;
            }
        }
        at = end;
    }
    Messages {
        body: Body {
            data: out,
            wire_size,
            truncated: truncated || cut || decode_error.is_some(),
            decoded_from: if decoded_any { encoding } else { None },
            decode_error,
            decoded_size: None,
        },
        web_trailers,
        framing_error,
    }
}

fn push_capped(out: &mut Vec<u8>, bytes: &[u8], max: usize, cut: &mut bool) {
    let room = max.saturating_sub(out.len());
    if bytes.len() > room {
        *cut = true;
    }
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `name: value` lines separated by CRLF (gRPC-Web trailer frame); names lowercased.
fn parse_web_trailers(block: &[u8]) -> Headers {
    String::from_utf8_lossy(block)
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim()))
        .filter(|(n, _)| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use capture_model::exchange::Header;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn paths_and_messages() {
        assert_eq!(
            method_of("/helloworld.Greeter/SayHello"),
            ("helloworld.Greeter".into(), "SayHello".into())
        );
        assert_eq!(method_of("/x"), (String::new(), "x".into()));
        assert_eq!(percent_decode("caf%C3%A9 %zz 100%"), "caf\u{e9} %zz 100%");
        assert!(is_grpc(Some("application/grpc+proto")));
        assert!(is_grpc(Some("Application/GRPC")));
        assert!(!is_grpc(Some("application/json")));
        assert!(is_grpc_web(Some("application/grpc-web+proto")));
        assert!(!is_grpc_web(Some("application/grpc-web-text")));
    }

    #[test]
    fn plain_messages_are_kept_as_they_are() {
        let mut raw = frame(0, b"hello");
        raw.extend(frame(0, b""));
        let m = messages(raw.clone(), raw.len() as u64, true, None, false, 1 << 20);
        assert_eq!(m.body.data, raw);
        assert!(!m.framing_error && !m.body.truncated);
    }

    #[test]
    fn gzip_messages_are_decompressed_and_reframed() {
        let mut raw = frame(1, &gzip(b"compressed message"));
        raw.extend(frame(0, b"plain"));
        let m = messages(raw, 0, true, Some("gzip"), false, 1 << 20);
        let mut want = frame(0, b"compressed message");
        want.extend(frame(0, b"plain"));
        assert_eq!(m.body.data, want);
        assert_eq!(m.body.decoded_from.as_deref(), Some("gzip"));
        assert!(!m.framing_error);
    }

    #[test]
    fn corrupt_compressed_message_is_kept_with_an_error() {
        let raw = frame(1, b"not gzip");
        let m = messages(raw.clone(), 0, true, Some("gzip"), false, 1 << 20);
        assert_eq!(m.body.data, raw);
        assert!(m.body.decode_error.is_some());
        assert!(m.body.truncated);
    }

    #[test]
    fn framing_errors_and_cut_bodies() {
        let m = messages(b"\x07garbage".to_vec(), 8, true, None, false, 1 << 20);
        assert!(m.framing_error);
        assert_eq!(m.body.data, b"\x07garbage");
        let raw = frame(0, b"0123456789");
        let m = messages(raw[..8].to_vec(), 15, false, None, false, 1 << 20);
        assert!(!m.framing_error, "a cut body may end inside a message");
        assert!(m.body.truncated);
    }

    #[test]
    fn grpc_web_trailer_frame_moves_to_trailers() {
        let mut raw = frame(0, b"reply");
        raw.extend(frame(
            0x80,
            b"grpc-status: 5\r\ngrpc-message: not%20found\r\n",
        ));
        let m = messages(raw, 0, true, None, true, 1 << 20);
        assert_eq!(m.body.data, frame(0, b"reply"));
        assert_eq!(
            m.web_trailers,
            vec![
                Header::new("grpc-status", "5"),
                Header::new("grpc-message", "not%20found")
            ]
        );
        let g = detail("/a.B/C", Some((&Headers::new(), &m.web_trailers)));
        assert_eq!(g.status, Some(5));
        assert_eq!(g.message.as_deref(), Some("not found"));
    }
}
