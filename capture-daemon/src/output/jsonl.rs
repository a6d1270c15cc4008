//! The JSONL sink: one HAR entry per line (DESIGN.md §5), to a file or to stdout.
//!
//! Lines are gathered in a buffer and written out, whole lines only, when it reaches
//! [`FLUSH_AT`] bytes or when the caller flushes (after every batch of exchanges, at least
//! every 100 ms, and at shutdown; dropping the sink flushes too). One `write` per batch
//! instead of one per line, and `tail -f` still sees whole lines. With `O_APPEND`, several
//! writers of one file do not split each other's lines.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
};

use super::{Sink, SinkError};
use capture_model::{clock::WallClock, exchange::Exchange, har};

/// Captured exchanges are sensitive even after redaction (bodies are kept): a file this sink
/// creates is readable by its owner only. An existing file keeps its mode.
const FILE_MODE: u32 = 0o600;

/// Buffered bytes at which lines are written out without waiting for a flush.
pub const FLUSH_AT: usize = 64 * 1024;

/// Writes one JSON document per line to a file (appending) or to stdout.
#[derive(Debug)]
pub struct JsonlSink {
    output: Output,
    /// The file path, or `stdout`, for error messages.
    destination: String,
    /// Whole lines, each with its newline, not written yet.
    buffer: Vec<u8>,
    /// A failed write left part of a line in the output: the next write first ends it, so
    /// the lines after it stay whole.
    partial_line: bool,
}

#[derive(Debug)]
enum Output {
    Stdout(io::Stdout),
    File(File),
    /// No `--output` (a collector is the only destination): nothing is written.
    Discard,
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

    /// A sink that writes nothing, for when exchanges go to a collector only. Entries are not
    /// even serialised.
    pub fn discard() -> Self {
        Self::with_output(Output::Discard, "nowhere".to_owned())
    }

    /// Whether this sink writes anything.
    pub fn is_enabled(&self) -> bool {
        !matches!(self.output, Output::Discard)
    }

    fn with_output(output: Output, destination: String) -> Self {
        Self {
            output,
            destination,
            // Room for a batch and the line that takes it past FLUSH_AT.
            buffer: Vec::with_capacity(2 * FLUSH_AT),
            partial_line: false,
        }
    }

    /// Where this sink writes: the file path, or `stdout`.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Adds `line` and a newline to the buffer; writes the buffer out if it reached
    /// [`FLUSH_AT`]. `line` must not contain a line break.
    pub fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let bytes = line.as_bytes();
        if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
            return Err(SinkError::LineBreak {
                destination: self.destination.clone(),
            });
        }
        self.buffer.extend_from_slice(bytes);
        self.buffer.push(b'\n');
        self.flush_if_full()
    }

    /// Adds the HAR entry of `ex` (see [`har::write_entry`]) and a newline to the buffer,
    /// serialised in place; writes the buffer out if it reached [`FLUSH_AT`]. `ex` must
    /// already be redacted.
    pub fn write_entry(&mut self, ex: &Exchange, clock: &WallClock) -> Result<(), SinkError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let start = self.buffer.len();
        har::write_entry(ex, clock, &mut self.buffer);
        // JSON strings escape control characters: an entry never has a line break.
        debug_assert!(
            !self.buffer[start..].contains(&b'\n') && !self.buffer[start..].contains(&b'\r'),
            "HAR entry with a line break"
        );
        self.buffer.push(b'\n');
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<(), SinkError> {
        if self.buffer.len() >= FLUSH_AT {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Writes out the buffered lines. On error the lines not written whole are dropped (a
    /// full disk or a closed pipe would otherwise grow the buffer without bound), and the
    /// error says how many.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        let result = match &mut self.output {
            Output::Stdout(stdout) => {
                let mut stdout = stdout.lock();
                write_lines(
                    &mut stdout,
                    &self.buffer,
                    &mut self.partial_line,
                    &mut written,
                )
                .and_then(|()| stdout.flush())
            }
            // A File is unbuffered: these are the write(2) calls, nothing is left to flush.
            Output::File(file) => {
                write_lines(file, &self.buffer, &mut self.partial_line, &mut written)
            }
            Output::Discard => Ok(()),
        };
        let result = result.map_err(|source| SinkError::Write {
            destination: self.destination.clone(),
            source,
            // A line is written whole when its newline is.
            lines: self.buffer.get(written..).map_or(0, count_lines),
        });
        self.buffer.clear();
        // A huge entry (a large base64 body) must not keep its memory for good.
        self.buffer.shrink_to(2 * FLUSH_AT);
        result
    }
}

/// Writes `lines` (whole lines) to `out`, first ending the part of a line an earlier failed
/// write left (`partial_line`), and updates `partial_line`. `written` is how many bytes of
/// `lines` were written, also when it fails.
fn write_lines(
    out: &mut impl Write,
    lines: &[u8],
    partial_line: &mut bool,
    written: &mut usize,
) -> io::Result<()> {
    if *partial_line {
        write_out(out, b"\n", &mut 0)?;
        *partial_line = false;
    }
    let result = write_out(out, lines, written);
    if result.is_err() && *written > 0 {
        *partial_line = lines.get(*written - 1) != Some(&b'\n');
    }
    result
}

/// `write_all` that tells how far it got: `written` is the number of bytes of `buf` written,
/// also when it fails.
fn write_out(out: &mut impl Write, buf: &[u8], written: &mut usize) -> io::Result<()> {
    while let Some(rest) = buf.get(*written..).filter(|rest| !rest.is_empty()) {
        match out.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

impl Sink for JsonlSink {
    fn deliver(&mut self, ex: &Exchange, clock: &WallClock) -> Result<(), SinkError> {
        self.write_entry(ex, clock)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        JsonlSink::flush(self)
    }
}

impl Drop for JsonlSink {
    /// Writes out what is still buffered; a failure can only be logged.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "writing the last exchanges failed");
        }
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
    use capture_model::exchange::{
        Body, ConnMeta, Header, Headers, HttpVersion, Protocol, Request, Timing,
    };

    fn exchange(target: &str) -> Exchange {
        Exchange {
            protocol: Protocol::H1,
            request: Request {
                method: "GET".into(),
                target: target.into(),
                version: HttpVersion::Http11,
                headers: vec![Header::new("Host", "example.com")].into(),
                headers_size: 40,
                body: Body::default(),
                trailers: Headers::new(),
            },
            response: None,
            timing: Timing::default(),
            incomplete: None,
            conn: ConnMeta::default(),
            pid: 7,
            workload: Default::default(),
            redacted: Vec::new(),
            routing_key: None,
            grpc: None,
            cgroup_id: 0,
        }
    }

    #[test]
    fn lines_are_readable_after_flush_and_parse_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let path_str = path.to_str().unwrap();
        let mut sink = JsonlSink::open(path_str).unwrap();
        let clock = WallClock::with_offset_ns(0);

        // A reader opened alongside (tail -f) sees the lines of a batch once it is flushed.
        let mut reader = BufReader::new(File::open(&path).unwrap());
        for batch in 0..2 {
            for i in 0..3 {
                sink.deliver(&exchange(&format!("/item/{batch}/{i}")), &clock)
                    .unwrap();
            }
            let mut line = String::new();
            assert_eq!(reader.read_line(&mut line).unwrap(), 0, "seen before flush");
            Sink::flush(&mut sink).unwrap();
            for i in 0..3 {
                line.clear();
                reader.read_line(&mut line).unwrap();
                assert!(line.ends_with('\n'), "line {i} not complete: {line:?}");
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(
                    v["request"]["url"],
                    format!("http://example.com/item/{batch}/{i}")
                );
                // The entry is the one har writes.
                assert_eq!(
                    line.trim_end(),
                    har::entry_json_line(&exchange(&format!("/item/{batch}/{i}")), &clock)
                );
            }
        }
        sink.write_line(r#"{"plain":true}"#).unwrap();
        sink.flush().unwrap();
        // Nothing buffered: a flush writes nothing.
        sink.flush().unwrap();

        let content = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 7);
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
    fn a_full_buffer_is_written_without_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        let line = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
        let per_batch = FLUSH_AT.div_ceil(line.len() + 1);
        for i in 0..per_batch {
            assert_eq!(fs::metadata(&path).unwrap().len(), 0, "written at line {i}");
            sink.write_line(&line).unwrap();
        }
        // The line that took the buffer to FLUSH_AT wrote it all, whole lines.
        let content = fs::read_to_string(&path).unwrap();
        assert_eq!(content.len(), per_batch * (line.len() + 1));
        assert!(content.lines().all(|l| l == line));

        sink.write_line("{}").unwrap();
        sink.write_entry(&exchange("/last"), &WallClock::with_offset_ns(0))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), content);
        // Dropping the sink writes what is left.
        drop(sink);
        let content = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), per_batch + 2);
        assert_eq!(lines[per_batch], "{}");
        assert!(lines[per_batch + 1].contains("http://example.com/last"));
    }

    #[test]
    fn a_huge_line_is_written_at_once_and_its_memory_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        let line = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4 * FLUSH_AT));
        sink.write_line(&line).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{line}\n"));
        assert!(sink.buffer.is_empty() && sink.buffer.capacity() <= 2 * FLUSH_AT);
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
        sink.flush().unwrap();
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
        sink.write_line("{\"before\":1}").unwrap();
        for bad in ["{\"secret\":\"s3cr3t\"}\n{}", "{\"secret\":\"s3cr3t\"}\r"] {
            let error = sink.write_line(bad).unwrap_err().to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
            assert!(error.contains(path.to_str().unwrap()), "{error}");
        }
        sink.flush().unwrap();
        // The refused lines are not written; the line before them is.
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"before\":1}\n");
    }

    #[test]
    fn write_errors_name_the_destination_not_the_content() {
        // /dev/full accepts open and fails every write with ENOSPC.
        let Ok(mut sink) = JsonlSink::open("/dev/full") else {
            return;
        };
        // Buffered: the error comes with the flush, and counts the lines lost.
        sink.write_line("{\"secret\":\"s3cr3t\"}").unwrap();
        sink.write_line("{\"secret\":\"s3cr3t\"}").unwrap();
        let error = sink.flush().unwrap_err();
        assert!(
            matches!(error, SinkError::Write { lines: 2, .. }),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(error.starts_with("cannot write to /dev/full: "), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        // The lost lines are not retried.
        sink.flush().unwrap();

        // A full buffer fails on the entry that fills it.
        let ex = exchange("/secret-path");
        let clock = WallClock::with_offset_ns(0);
        let error = loop {
            if let Err(e) = sink.write_entry(&ex, &clock) {
                break e.to_string();
            }
        };
        assert!(error.starts_with("cannot write to /dev/full: "), "{error}");
        assert!(!error.contains("secret-path"), "{error}");
        sink.flush().unwrap();
    }

    /// Takes `room` bytes, then fails like a full disk.
    struct Filling {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.data.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_cut_by_a_failed_write_is_ended_before_the_next_lines() {
        let mut out = Filling {
            data: Vec::new(),
            room: 10,
        };
        let mut partial = false;
        let mut written = 0;
        let lines = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        assert!(write_lines(&mut out, lines, &mut partial, &mut written).is_err());
        assert_eq!((written, partial), (10, true));
        assert_eq!(count_lines(&lines[written..]), 2);

        // Still full: the fragment stays unended.
        let mut written = 0;
        assert!(write_lines(&mut out, b"{\"d\":4}\n", &mut partial, &mut written).is_err());
        assert_eq!((written, partial), (0, true));

        out.room = 100;
        let mut written = 0;
        write_lines(&mut out, b"{\"e\":5}\n", &mut partial, &mut written).unwrap();
        assert_eq!((written, partial), (8, false));
        assert_eq!(out.data, b"{\"a\":1}\n{\"\n{\"e\":5}\n");

        // A failure on a line boundary leaves nothing to end.
        out.room = out.data.len() + 8;
        let mut written = 0;
        assert!(
            write_lines(
                &mut out,
                b"{\"f\":6}\n{\"g\":7}\n",
                &mut partial,
                &mut written
            )
            .is_err()
        );
        assert_eq!((written, partial), (8, false));
    }

    #[test]
    fn dash_is_stdout() {
        let mut sink = JsonlSink::open("-").unwrap();
        assert_eq!(sink.destination(), "stdout");
        assert!(matches!(sink.output, Output::Stdout(_)));
        // An empty line: the test's own output gets a blank line, nothing else.
        sink.write_line("").unwrap();
        sink.flush().unwrap();
        assert!(sink.buffer.is_empty());
    }
}
