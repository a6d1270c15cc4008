//! The JSONL sink: one HAR entry per line (DESIGN.md §5), to a file or to stdout.
//!
//! Each line is written with a single `write` and flushed at once, so `tail -f` sees whole
//! lines as they come, and with `O_APPEND` several writers of one file do not split each
//! other's lines.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
};

use super::{Sink, SinkError};
use crate::{clock::WallClock, exchange::Exchange, har};

/// Captured exchanges are sensitive even after redaction (bodies are kept): a file this sink
/// creates is readable by its owner only. An existing file keeps its mode.
const FILE_MODE: u32 = 0o600;

/// Writes one JSON document per line to a file (appending) or to stdout.
#[derive(Debug)]
pub struct JsonlSink {
    output: Output,
    /// The file path, or `stdout`, for error messages.
    destination: String,
    /// Reused buffer: the line and its newline, written at once.
    buffer: Vec<u8>,
}

#[derive(Debug)]
enum Output {
    Stdout(io::Stdout),
    File(File),
}

impl JsonlSink {
    /// Opens `path` for appending, creating it (mode 0600) if missing; `-` is stdout.
    /// The parent directory is not created: a missing one is an error naming the path.
    pub fn open(path: &str) -> Result<Self, SinkError> {
        if path == "-" {
            return Ok(Self::with_output(
                Output::Stdout(io::stdout()),
                "stdout".to_owned(),
            ));
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: PathBuf::from(path),
                source,
            })?;
        Ok(Self::with_output(Output::File(file), path.to_owned()))
    }

    fn with_output(output: Output, destination: String) -> Self {
        Self {
            output,
            destination,
            buffer: Vec::new(),
        }
    }

    /// Where this sink writes: the file path, or `stdout`.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Writes `line` and a newline, and flushes. `line` must not contain a line break.
    pub fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
        if line.contains(['\n', '\r']) {
            return Err(SinkError::LineBreak {
                destination: self.destination.clone(),
            });
        }
        self.buffer.clear();
        self.buffer.reserve(line.len() + 1);
        self.buffer.extend_from_slice(line.as_bytes());
        self.buffer.push(b'\n');
        let result = match &mut self.output {
            Output::Stdout(stdout) => {
                let mut stdout = stdout.lock();
                stdout.write_all(&self.buffer).and_then(|()| stdout.flush())
            }
            // A File is unbuffered: write_all is the write(2) calls, nothing is left to flush.
            Output::File(file) => file.write_all(&self.buffer),
        };
        result.map_err(|source| SinkError::Write {
            destination: self.destination.clone(),
            source,
        })
    }
}

impl Sink for JsonlSink {
    fn deliver(&mut self, ex: &Exchange, clock: &WallClock) -> Result<(), SinkError> {
        self.write_line(&har::entry_json_line(ex, clock))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        io::{BufRead, BufReader},
        os::unix::fs::PermissionsExt as _,
    };

    use super::*;
    use crate::exchange::{
        Body, ConnMeta, Header, HttpVersion, Protocol, Request, Timing, Workload,
    };

    fn exchange(target: &str) -> Exchange {
        Exchange {
            protocol: Protocol::H1,
            request: Request {
                method: "GET".into(),
                target: target.into(),
                version: HttpVersion::Http11,
                headers: vec![Header::new("Host", "example.com")],
                headers_size: 40,
                body: Body::default(),
                trailers: Vec::new(),
            },
            response: None,
            timing: Timing::default(),
            incomplete: None,
            conn: ConnMeta::default(),
            pid: 7,
            workload: Workload::default(),
            redacted: Vec::new(),
            routing_key: None,
        }
    }

    #[test]
    fn lines_are_readable_while_open_and_parse_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let path_str = path.to_str().unwrap();
        let mut sink = JsonlSink::open(path_str).unwrap();
        let clock = WallClock::with_offset_ns(0);

        // A reader opened alongside sees each line as soon as it is written (tail -f).
        let mut reader = BufReader::new(File::open(&path).unwrap());
        for i in 0..3 {
            sink.deliver(&exchange(&format!("/item/{i}")), &clock)
                .unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.ends_with('\n'), "line {i} not complete: {line:?}");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["request"]["url"], format!("http://example.com/item/{i}"));
        }
        sink.write_line(r#"{"plain":true}"#).unwrap();

        let content = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 4);
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(sink.destination(), path_str);
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs::write(&path, "{\"earlier\":1}\n").unwrap();
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        sink.write_line("{\"later\":2}").unwrap();
        drop(sink);
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        sink.write_line("{\"last\":3}").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"earlier\":1}\n{\"later\":2}\n{\"last\":3}\n"
        );
    }

    #[test]
    fn missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("out.jsonl");
        let error = JsonlSink::open(path.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains(path.to_str().unwrap()), "{error}");
        assert!(error.contains("No such file or directory"), "{error}");
        assert!(error.contains("not created"), "{error}");
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = JsonlSink::open(dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains(dir.path().to_str().unwrap()), "{error}");
    }

    #[test]
    fn line_breaks_are_refused_without_echoing_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        let error = sink
            .write_line("{\"secret\":\"s3cr3t\"}\n{}")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(error.contains(path.to_str().unwrap()), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn write_errors_name_the_destination_not_the_content() {
        // /dev/full accepts open and fails every write with ENOSPC.
        let Ok(mut sink) = JsonlSink::open("/dev/full") else {
            return;
        };
        let error = sink
            .write_line("{\"secret\":\"s3cr3t\"}")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("cannot write to /dev/full: "), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
    }

    #[test]
    fn dash_is_stdout() {
        let sink = JsonlSink::open("-").unwrap();
        assert_eq!(sink.destination(), "stdout");
        assert!(matches!(sink.output, Output::Stdout(_)));
    }
}
