//! The bearer token (`--token-file`): read at start-up, then polled, so a rotated token (a
//! Kubernetes Secret update, an operator's edit) is used without a restart. A change of the
//! file's content or modification time counts as a change: after the collector refused a token,
//! pushes wait for one, and `touch FILE` is the way to ask for a retry with the same token.
//!
//! The token never reaches a log line, a metric or an error message: errors name the file and
//! what is wrong with its content, never the content.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use tonic::metadata::{Ascii, MetadataValue};

/// Why a token file cannot be used. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("it is empty")]
    Empty,
    #[error("the token has characters a header cannot carry (only visible ASCII is allowed)")]
    NotAscii,
}

/// Reads and checks a token file: the token is its content without surrounding whitespace.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = fs::read_to_string(path).map_err(|e| TokenError::Read(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(TokenError::NotAscii);
    }
    Ok(token.to_owned())
}

/// `Bearer <token>`, marked sensitive so HPACK never indexes it.
pub fn bearer(token: &str) -> Result<MetadataValue<Ascii>, TokenError> {
    let mut value =
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| TokenError::NotAscii)?;
    value.set_sensitive(true);
    Ok(value)
}

/// The current token of a token file.
pub struct TokenFile {
    path: PathBuf,
    /// What the last poll saw: content and modification time.
    seen: Option<(String, Option<SystemTime>)>,
    value: Option<MetadataValue<Ascii>>,
    /// Bumped on every change the poll sees.
    version: u64,
    /// The last poll failed (logged once until it reads again).
    failing: bool,
}

/// What [`TokenFile::poll`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenPoll {
    Unchanged,
    /// The file changed (content or modification time) and holds a usable token.
    Changed,
    /// The file cannot be used now; the previous token stays in use.
    Unusable(TokenError),
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads `path` now; an unusable file is an error (start-up refuses it).
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let mut file = Self {
            path: path.to_owned(),
            seen: None,
            value: None,
            version: 0,
            failing: false,
        };
        match file.poll() {
            TokenPoll::Unusable(e) => Err(e),
            _ => Ok(file),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `authorization` metadata value to send.
    pub fn value(&self) -> Option<&MetadataValue<Ascii>> {
        self.value.as_ref()
    }

    /// Changes seen so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The token, for removing it from text that must not show it.
    pub fn scrub(&self, text: &str) -> String {
        match &self.seen {
            Some((token, _)) if !token.is_empty() => text.replace(token.as_str(), "<token>"),
            _ => text.to_owned(),
        }
    }

    /// Reads the file again.
    pub fn poll(&mut self) -> TokenPoll {
        let mtime = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let token = match read_token(&self.path) {
            Ok(t) => t,
            Err(e) => {
                let first = !self.failing;
                self.failing = true;
                return if first {
                    TokenPoll::Unusable(e)
                } else {
                    TokenPoll::Unchanged
                };
            }
        };
        self.failing = false;
        if self
            .seen
            .as_ref()
            .is_some_and(|(t, m)| *t == token && *m == mtime)
        {
            return TokenPoll::Unchanged;
        }
        let value = match bearer(&token) {
            Ok(v) => v,
            Err(e) => return TokenPoll::Unusable(e),
        };
        self.seen = Some((token, mtime));
        self.value = Some(value);
        self.version += 1;
        TokenPoll::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trims_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "s3cret-one\n").unwrap();
        let mut file = TokenFile::open(&path).unwrap();
        assert_eq!(file.value().unwrap().to_str().unwrap(), "Bearer s3cret-one");
        assert!(file.value().unwrap().is_sensitive());
        assert_eq!(file.poll(), TokenPoll::Unchanged);
        let v = file.version();
        fs::write(&path, "s3cret-two").unwrap();
        assert_eq!(file.poll(), TokenPoll::Changed);
        assert_eq!(file.version(), v + 1);
        assert_eq!(file.value().unwrap().to_str().unwrap(), "Bearer s3cret-two");
        assert_eq!(file.scrub("bad token s3cret-two"), "bad token <token>");
    }

    #[test]
    fn a_touch_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "tok").unwrap();
        let mut file = TokenFile::open(&path).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(file.poll(), TokenPoll::Changed);
    }

    #[test]
    fn unusable_files_keep_the_old_token_and_never_show_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(matches!(
            TokenFile::open(&path).unwrap_err(),
            TokenError::Read(_)
        ));
        fs::write(&path, "  \n").unwrap();
        assert_eq!(TokenFile::open(&path).unwrap_err(), TokenError::Empty);
        fs::write(&path, "tök-s3cret").unwrap();
        let e = TokenFile::open(&path).unwrap_err();
        assert_eq!(e, TokenError::NotAscii);
        assert!(!e.to_string().contains("s3cret"));

        fs::write(&path, "good").unwrap();
        let mut file = TokenFile::open(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            file.poll(),
            TokenPoll::Unusable(TokenError::Read(_))
        ));
        // Reported once, then quiet until it reads again.
        assert_eq!(file.poll(), TokenPoll::Unchanged);
        assert_eq!(file.value().unwrap().to_str().unwrap(), "Bearer good");
    }
}
