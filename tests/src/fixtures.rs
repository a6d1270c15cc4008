//! What the Rust HTTP/2 peers (`src/bin/grpc_echo.rs`, `src/bin/h2_peer.rs`) and the tests that
//! capture them (`e2e/http2.rs`) must agree on: the gRPC service, the scripted calls and their
//! expected outcomes, and the bodies of the h2 load (distinct per stream, checkable byte by byte).

/// The generated messages, client and server of `proto/echo.proto`.
pub mod echo {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("capture.e2e.echo.v1");
}

/// gRPC path prefix of the Echo service (`/<package>.<service>/`).
pub const ECHO_SERVICE: &str = "capture.e2e.echo.v1.Echo";

/// The `Say` reply to `text`.
pub fn say_reply(text: &str) -> String {
    format!("hello, {text}")
}

/// The `Count` replies to `text` with `count`.
pub fn count_replies(text: &str, count: u32) -> Vec<String> {
    (0..count).map(|i| format!("{text} #{i}")).collect()
}

/// The `Collect` reply to the texts sent.
pub fn collect_reply(texts: &[String]) -> String {
    texts.join(",")
}

/// The `grpc-message` of `Fail` for `text` (sent percent-encoded, the non-ASCII letter and the
/// `%` included on purpose).
pub fn fail_message(text: &str) -> String {
    format!("no such item: {text} (100% gone, é)")
}

/// The text of the compressed `Say` call: long and repetitive, so gzip shrinks it.
pub fn gzip_text() -> String {
    "compress me please ".repeat(64)
}

/// What the gRPC client sends, call by call, in order. The tests rebuild the exact messages from
/// this.
pub mod grpc_script {
    /// `Say { text }`, plain.
    pub const SAY_TEXT: &str = "alpha";
    /// `Count { text, count }`.
    pub const COUNT_TEXT: &str = "beta";
    pub const COUNT: u32 = 3;
    /// `Collect`: one message per text.
    pub fn collect_texts() -> Vec<String> {
        (0..3).map(|i| format!("gamma-{i}")).collect()
    }
    /// `Fail { text }`.
    pub const FAIL_TEXT: &str = "delta";
}

/// Which way an h2 load body travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyDirection {
    Request,
    Response,
}

/// Length of the big body of each h2 load stream.
pub const H2_BIG_BODY: usize = 1024 * 1024;

/// Even streams upload a big body and get a small answer; odd streams send nothing and download a
/// big body. Both directions carry interleaved megabyte DATA streams, at half the bytes of
/// making every stream big both ways.
pub fn h2_uploads(index: u32) -> bool {
    index.is_multiple_of(2)
}

/// Path of h2 load stream `index`.
pub fn h2_path(index: u32) -> String {
    if h2_uploads(index) {
        format!("/upload/{index}?size={H2_BIG_BODY}")
    } else {
        format!("/download/{index}?size={H2_BIG_BODY}")
    }
}

/// The small body paired with a big one: the request of a download, the response of an upload.
pub fn h2_small_body(index: u32, direction: BodyDirection) -> Vec<u8> {
    match direction {
        BodyDirection::Request => Vec::new(),
        BodyDirection::Response => {
            format!("stored {H2_BIG_BODY} bytes for stream {index}\n").into_bytes()
        }
    }
}

/// The body of stream `index` in `direction`: big (binary, distinct for every stream and
/// direction, so a byte delivered to the wrong stream or offset shows) or small.
pub fn h2_body(index: u32, direction: BodyDirection) -> Vec<u8> {
    let big = match direction {
        BodyDirection::Request => h2_uploads(index),
        BodyDirection::Response => !h2_uploads(index),
    };
    if big {
        pseudo_random(
            u64::from(index) * 2 + u64::from(direction == BodyDirection::Response),
            H2_BIG_BODY,
        )
    } else {
        h2_small_body(index, direction)
    }
}

/// `len` bytes of splitmix64 output seeded with `seed` (word at a time: cheap even unoptimised).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0xA076_1D64_78BD_642F);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Path of request `index` made on the connection that predates the daemon.
pub fn late_path(index: u32) -> String {
    format!("/late/{index}?n={index}")
}

/// Response body of a GET on the h2 peer server for any path but the load paths.
pub fn echo_path_body(path_and_query: &str) -> String {
    format!("path={path_and_query}\n")
}
