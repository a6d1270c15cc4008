//! Credentials for replay: what capture redacted, put back from the environment or a file.
//!
//! `--credential NAME=env:VAR` or `--credential NAME=file:PATH`; NAME is an entry of
//! `_capture.redacted` (`authorization`, `cookie`, `x-api-key`, `query:token`). A literal value
//! on the command line is refused: it would sit in the shell history and `ps`. Values are read
//! once at start-up and never printed: [`Secret`]'s `Debug` shows its length only, and every
//! error names the credential and its source, never the value.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

/// A credential value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// Names in `_capture.redacted` that are not credentials, besides the connection-specific
/// fields the client sets itself (`is_hop_by_hop`): response-only cookies, and URL userinfo
/// (never sent as a field).
const NOT_CREDENTIALS: [&str; 3] = ["set-cookie", "set-cookie2", "url:userinfo"];

/// Whether a redacted name needs a credential to replay the request. Body fields
/// (`body:password`) do not: the body is replayed as recorded, with the redaction marker in
/// place of the value (there is no field-level injection into bodies).
pub fn needs_credential(redacted: &str) -> bool {
    !(capture_model::exchange::is_hop_by_hop(redacted)
        || NOT_CREDENTIALS.contains(&redacted)
        || redacted.starts_with("body:"))
}

/// The credentials given on the command line, by lowercase name.
#[derive(Debug, Default)]
pub struct Credentials {
    by_name: BTreeMap<String, Secret>,
}

impl Credentials {
    /// Parses and reads every `NAME=env:VAR` / `NAME=file:PATH`.
    pub fn load(specs: &[String]) -> anyhow::Result<Self> {
        let mut by_name = BTreeMap::new();
        for spec in specs {
            let (name, source) = spec
                .split_once('=')
                .context("--credential wants NAME=env:VAR or NAME=file:PATH")?;
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                bail!("--credential: empty name");
            }
            let value = if let Some(var) = source.strip_prefix("env:") {
                std::env::var(var).with_context(|| {
                    format!(
                        "credential {name}: environment variable {var} is not set (or not UTF-8)"
                    )
                })?
            } else if let Some(path) = source.strip_prefix("file:") {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("credential {name}: cannot read {path}"))?;
                let trimmed = text.strip_suffix('\n').unwrap_or(&text);
                trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
            } else {
                bail!(
                    "credential {name}: the source must be env:VAR or file:PATH (a literal value is refused)"
                );
            };
            if name.starts_with("query:") {
                // Any text can go in a query: it is percent-encoded when sent.
            } else if http::HeaderValue::from_str(&value).is_err() {
                bail!("credential {name}: the value is not a valid header value");
            }
            by_name.insert(name, Secret(value));
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.by_name.get(&name.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values_are_refused_and_errors_hide_values() {
        let err = Credentials::load(&["authorization=Bearer s3cret".into()]).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("literal value is refused"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn env_and_file_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        std::fs::write(&path, "session=abc\n").unwrap();
        // `std::env::set_var` is unsafe in a threaded test binary: read a variable every
        // process has instead.
        let creds = Credentials::load(&[
            format!("Cookie=file:{}", path.display()),
            "x-home=env:PATH".into(),
        ])
        .unwrap();
        assert_eq!(creds.get("cookie").unwrap().expose(), "session=abc");
        assert!(creds.get("X-Home").is_some());
        assert_eq!(format!("{:?}", creds.get("cookie").unwrap()), "<11 bytes>");
        let err = Credentials::load(&["a=env:CAPTURE_TEST_SURELY_UNSET".into()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "credential a: environment variable CAPTURE_TEST_SURELY_UNSET is not set (or not UTF-8): environment variable not found"
        );
    }

    #[test]
    fn which_redactions_need_credentials() {
        assert!(needs_credential("authorization"));
        assert!(needs_credential("query:token"));
        assert!(!needs_credential("connection"));
        assert!(!needs_credential("set-cookie"));
        assert!(!needs_credential("url:userinfo"));
        assert!(!needs_credential("body:password"));
    }
}
