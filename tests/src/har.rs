//! Reading captured exchanges (HAR 1.2 entries with `_capture` extensions, DESIGN.md §5).

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::Value;

/// The string at a JSON pointer such as `/request/method`.
pub fn str_at<'a>(entry: &'a Value, pointer: &str) -> Result<&'a str> {
    entry
        .pointer(pointer)
        .with_context(|| format!("{pointer} missing in {}", brief(entry)))?
        .as_str()
        .with_context(|| format!("{pointer} is not a string in {}", brief(entry)))
}

/// The integer at a JSON pointer.
pub fn i64_at(entry: &Value, pointer: &str) -> Result<i64> {
    entry
        .pointer(pointer)
        .with_context(|| format!("{pointer} missing in {}", brief(entry)))?
        .as_i64()
        .with_context(|| format!("{pointer} is not an integer in {}", brief(entry)))
}

/// The first value of header `name` (case-insensitive) in `request` or `response` of `entry`.
pub fn header<'a>(entry: &'a Value, part: &str, name: &str) -> Option<&'a str> {
    headers(entry, part)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// All `(name, value)` headers of `request` or `response`.
pub fn headers<'a>(entry: &'a Value, part: &str) -> Vec<(&'a str, &'a str)> {
    entry
        .pointer(&format!("/{part}/headers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|h| Some((h.get("name")?.as_str()?, h.get("value")?.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Path and query of the request URL (`http://host:port/a?b` -> `/a?b`).
pub fn path(entry: &Value) -> Result<&str> {
    let url = str_at(entry, "/request/url")?;
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    Ok(after_scheme.find('/').map_or("/", |i| &after_scheme[i..]))
}

/// The decoded response body (`content.text`, base64-decoded when `content.encoding` says so).
pub fn response_body(entry: &Value) -> Result<Vec<u8>> {
    body(entry, "/response/content", "encoding")
}

/// The decoded request body (`postData.text`, base64 when `postData._encoding` says so); empty
/// when there is no `postData`.
pub fn request_body(entry: &Value) -> Result<Vec<u8>> {
    if entry
        .pointer("/request/postData")
        .is_none_or(Value::is_null)
    {
        return Ok(Vec::new());
    }
    body(entry, "/request/postData", "_encoding")
}

fn body(entry: &Value, pointer: &str, encoding_key: &str) -> Result<Vec<u8>> {
    let holder = entry
        .pointer(pointer)
        .with_context(|| format!("{pointer} missing in {}", brief(entry)))?;
    let text = match holder.get("text") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => text,
        Some(other) => bail!("{pointer}/text is not a string: {other}"),
    };
    match holder.get(encoding_key).and_then(Value::as_str) {
        None => Ok(text.as_bytes().to_vec()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(text)
            .with_context(|| format!("{pointer}/text is not base64")),
        Some(other) => bail!("{pointer}/{encoding_key} is {other:?}, not base64"),
    }
}

/// Header names listed in `_capture.redacted`.
pub fn redacted(entry: &Value) -> Vec<&str> {
    entry
        .pointer("/_capture/redacted")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The entry as one line with long strings shortened, for error messages.
pub fn brief(entry: &Value) -> String {
    fn shorten(value: &Value) -> Value {
        match value {
            Value::String(s) if s.len() > 160 => {
                let cut = (0..=160)
                    .rev()
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                Value::String(format!("{}...({} bytes)", &s[..cut], s.len()))
            }
            Value::Array(items) => Value::Array(items.iter().map(shorten).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), shorten(v))).collect())
            }
            other => other.clone(),
        }
    }
    shorten(entry).to_string()
}
