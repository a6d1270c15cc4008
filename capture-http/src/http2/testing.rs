//! Builders for HTTP/2 byte streams and readers of decoder output, for tests here and in the
//! daemon (feature `test-support`).

use super::frame::{
    DATA, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, PREFACE, SETTINGS, write_frame,
};
use super::hpack::{Encoder, Indexing};
use super::{Http2Conn, Http2Output};
use crate::http1::Side;
use capture_model::exchange::Exchange;

/// Builds the two byte streams of a connection: what the client sends, what the server sends.
pub struct Wire {
    pub client: Vec<u8>,
    pub server: Vec<u8>,
    pub client_enc: Encoder,
    pub server_enc: Encoder,
}

impl Wire {
    /// With the client preface and both SETTINGS.
    #[expect(
        clippy::new_without_default,
        reason = "a test builder; `new` says it writes the preface"
    )]
    pub fn new() -> Self {
        let mut w = Self::bare();
        w.client.extend_from_slice(PREFACE);
        write_frame(&mut w.client, SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        write_frame(&mut w.server, SETTINGS, 0, 0, &[]);
        write_frame(&mut w.client, SETTINGS, 1, 0, &[]);
        write_frame(&mut w.server, SETTINGS, 1, 0, &[]);
        w
    }

    pub fn bare() -> Self {
        Self {
            client: Vec::new(),
            server: Vec::new(),
            client_enc: Encoder::new(),
            server_enc: Encoder::new(),
        }
    }

    pub fn block(enc: &mut Encoder, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            enc.field(n.as_bytes(), v.as_bytes(), Indexing::Incremental, &mut b);
        }
        b
    }

    pub fn request(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) {
        let b = Self::block(&mut self.client_enc, fields);
        let flags = FLAG_END_HEADERS | if end { FLAG_END_STREAM } else { 0 };
        write_frame(&mut self.client, HEADERS, flags, stream, &b);
    }

    pub fn response(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) {
        let b = Self::block(&mut self.server_enc, fields);
        let flags = FLAG_END_HEADERS | if end { FLAG_END_STREAM } else { 0 };
        write_frame(&mut self.server, HEADERS, flags, stream, &b);
    }

    pub fn client_data(&mut self, stream: u32, data: &[u8], end: bool) {
        let flags = if end { FLAG_END_STREAM } else { 0 };
        write_frame(&mut self.client, DATA, flags, stream, data);
    }

    pub fn server_data(&mut self, stream: u32, data: &[u8], end: bool) {
        let flags = if end { FLAG_END_STREAM } else { 0 };
        write_frame(&mut self.server, DATA, flags, stream, data);
    }
}

pub fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "http".into()),
        (":authority", "svc.test:8080".into()),
        (":path", path.into()),
        ("user-agent", "test/1".into()),
    ]
}

pub fn refs<'a>(f: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    f.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// Feeds the client stream, then the server stream, then closes.
pub fn run(conn: &mut Http2Conn, w: &Wire) -> Vec<Http2Output> {
    let mut out = Vec::new();
    conn.on_data(Side::Request, &w.client, 1, &mut out);
    conn.on_data(Side::Response, &w.server, 2, &mut out);
    conn.on_close(3, &mut out);
    out
}

pub fn exchanges(out: &[Http2Output]) -> Vec<&Exchange> {
    out.iter()
        .filter_map(|o| match o {
            Http2Output::Exchange(e) => Some(e),
            _ => None,
        })
        .collect()
}
