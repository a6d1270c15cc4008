//! Redaction: what is removed from every exchange before any sink sees it (DESIGN.md §6).
//!
//! [`RedactionPolicy::apply`] rewrites an [`Exchange`] in place:
//! - credential fields (`Authorization`, `Authentication`, `Cookie`, `Proxy-Authorization`,
//!   `Set-Cookie`, `Set-Cookie2`) are removed from headers and trailers, in either direction: they
//!   carry a secret whichever way they travel, and have no other meaning in the other direction;
//! - connection-specific fields (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, and every field the message's `Connection` header names) are
//!   removed from headers and trailers, in both directions;
//! - configured extra header names are removed in both directions, trailers too;
//! - configured query parameters are removed from the request target, from HTTP/2 `:path`, and
//!   from the URLs in `Referer`, `Location` and `Content-Location` (query and fragment);
//! - userinfo (`user:pass@`) is removed from absolute URLs and from `Host` / `:authority`.
//!
//! Names are matched ASCII case-insensitively, so HTTP/1 (`Cookie`) and HTTP/2 (`cookie`, maybe
//! split over several fields, RFC 9113 §8.2.3) are handled alike. Pseudo-header fields (`:method`,
//! `:path`, ...) are never removed; `:path` and `:authority` only lose query parameters and
//! userinfo. What was removed is recorded in `Exchange::redacted`: lowercase header names,
//! `query:<name>` for query parameters, `url:userinfo` and `body:<name>`, sorted and
//! deduplicated.
//!
//! - in JSON, form-urlencoded and multipart/form-data bodies (and gRPC `+json` messages), the
//!   values of credential fields are replaced by [`body::MARKER`] (see [`body`]).
//!
//! Nothing here logs, and nothing here formats a field value: values never reach a log line, an
//! error or a panic message from this module.

pub mod body;

use smallvec::SmallVec;

use body::BodyFields;

use capture_model::uri::scheme_end;

use capture_model::exchange::{Exchange, HOP_BY_HOP_FIELDS, HeaderRef, Headers};

/// Fields that carry credentials (RFC 9110 §11.6.2, §11.7.2; RFC 6265 §4; RFC 2965 §3.2.2),
/// and the common non-standard API-key and token headers.
const CREDENTIAL_FIELDS: [&str; 10] = [
    "authorization",
    "authentication",
    "cookie",
    "proxy-authorization",
    "set-cookie",
    "set-cookie2",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-amz-security-token",
];

/// Query parameters always removed, lowercase: those OpenTelemetry's semantic conventions
/// treat as sensitive in `url.query` (presigned AWS and Google Cloud Storage URLs, Azure SAS
/// `sig`), plus the common OAuth 2.0 (RFC 6750 §2.3) and API-key parameters.
const CREDENTIAL_QUERY_PARAMS: [&str; 9] = [
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "awsaccesskeyid",
    "signature",
    "sig",
    "x-goog-signature",
    "access_token",
    "api_key",
];

/// Fields whose value is a URI reference that may carry userinfo or query parameters.
const URL_FIELDS: [&str; 3] = ["referer", "location", "content-location"];

/// Fields whose value is an authority (`host[:port]`, RFC 9110 §7.2, RFC 9113 §8.3.1).
const AUTHORITY_FIELDS: [&str; 2] = ["host", ":authority"];

/// Redacted-list entry for removed userinfo.
const USERINFO_ENTRY: &str = "url:userinfo";

/// A set of lowercase field names, looked up ASCII case-insensitively. Every field of every
/// exchange is looked up, and a list of twenty names cost twenty comparisons for each: names
/// are kept by length, so a lookup compares only the few names of its length (usually none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NameSet {
    /// `by_len[n]`: the names of `n` bytes.
    by_len: Vec<Vec<Box<str>>>,
}

impl NameSet {
    fn new<'n>(names: impl IntoIterator<Item = &'n str>) -> Self {
        let mut set = Self::default();
        for name in names {
            let name = name.to_ascii_lowercase();
            if set.contains(&name) {
                continue;
            }
            if set.by_len.len() <= name.len() {
                set.by_len.resize_with(name.len() + 1, Vec::new);
            }
            set.by_len[name.len()].push(name.into_boxed_str());
        }
        // Sorted, so two sets of the same names are equal whatever order they were given in.
        for names in &mut set.by_len {
            names.sort_unstable();
        }
        set
    }

    fn contains(&self, name: &str) -> bool {
        self.by_len.get(name.len()).is_some_and(|names| {
            names
                .iter()
                .any(|listed| listed.as_bytes().eq_ignore_ascii_case(name.as_bytes()))
        })
    }
}

/// What to remove from exchanges: the fixed set of DESIGN.md §6 plus configured extras.
///
/// Holds names only, so its `Debug` output is safe to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactionPolicy {
    /// Every field name removed whatever the message says: the credential and hop-by-hop
    /// fields and the configured ones (lowercase, pseudo-headers excluded).
    removed_fields: NameSet,
    /// Lowercase query parameter names, matched against the percent-decoded name: the
    /// credential parameters and the configured ones.
    extra_query_params: Vec<String>,
    /// Body fields whose values are replaced.
    body_fields: BodyFields,
}

impl Default for RedactionPolicy {
    /// The fixed set and the default body fields.
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

impl RedactionPolicy {
    /// A policy removing the fixed set plus `extra_headers` (in both directions, trailers too)
    /// and `extra_query_params`, and redacting the default body fields.
    ///
    /// Names are trimmed and matched case-insensitively; empty names are ignored, and so are
    /// pseudo-header names (`:path`, ...), which are never removed.
    pub fn new(extra_headers: &[String], extra_query_params: &[String]) -> Self {
        let headers = extra_headers
            .iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty() && !name.starts_with(':'));
        let mut params: Vec<String> = extra_query_params
            .iter()
            .map(|name| name.trim().to_lowercase())
            .chain(
                CREDENTIAL_QUERY_PARAMS
                    .iter()
                    .map(|name| (*name).to_owned()),
            )
            .filter(|name| !name.is_empty())
            .collect();
        params.sort();
        params.dedup();
        let removed_fields = NameSet::new(
            CREDENTIAL_FIELDS
                .iter()
                .chain(HOP_BY_HOP_FIELDS.iter())
                .copied()
                .chain(headers),
        );
        Self {
            removed_fields,
            extra_query_params: params,
            body_fields: BodyFields::default(),
        }
    }

    /// The same policy redacting `extra` body fields, plus the defaults when `defaults`
    /// (`--redact-body-field`, `--no-default-body-redaction`).
    #[must_use]
    pub fn with_body_fields(mut self, extra: &[String], defaults: bool) -> Self {
        self.body_fields = BodyFields::new(extra, defaults);
        self
    }

    /// Removes what DESIGN.md §6 says from `ex` and records the removed names in
    /// `ex.redacted` (sorted, deduplicated, lowercase; entries already there are kept).
    /// Applying a policy twice changes nothing the second time.
    pub fn apply(&self, ex: &mut Exchange) {
        let mut removed = Removed::from_existing(std::mem::take(&mut ex.redacted));

        let request = &mut ex.request;
        self.remove_fields(&mut request.headers, &mut request.trailers, &mut removed);
        self.rewrite_url_fields(&mut request.headers, &mut removed);
        self.rewrite_url_fields(&mut request.trailers, &mut removed);
        if let Some(target) = self.redact_target(&request.method, &request.target, &mut removed) {
            request.target = target;
        }

        self.body_fields
            .redact(&request.headers, &mut request.body, &mut removed);

        if let Some(response) = &mut ex.response {
            self.remove_fields(&mut response.headers, &mut response.trailers, &mut removed);
            self.rewrite_url_fields(&mut response.headers, &mut removed);
            self.rewrite_url_fields(&mut response.trailers, &mut removed);
            self.body_fields
                .redact(&response.headers, &mut response.body, &mut removed);
        }

        ex.redacted = removed.into_sorted();
    }

    /// Removes credential, connection-specific and configured fields from one message's
    /// header and trailer sections.
    fn remove_fields(&self, headers: &mut Headers, trailers: &mut Headers, removed: &mut Removed) {
        // Decided on the fields as they are, then removed: RFC 9110 §7.6.1 makes the fields a
        // message's Connection header names connection options for that message only, and
        // reading the trailers too only ever removes more. Nothing is allocated for a field
        // that stays (every exchange passes here): the connection options a message names are
        // nearly always one or two (`keep-alive`, `close`), kept on the stack.
        let mut doomed: SmallVec<[usize; 8]> = SmallVec::new();
        {
            let options: SmallVec<[&str; 4]> =
                connection_options(headers.iter().chain(trailers.iter())).collect();
            for (index, field) in headers.iter().chain(trailers.iter()).enumerate() {
                if self.is_removed(field.name, &options) {
                    removed.insert_lowercase(field.name);
                    doomed.push(index);
                }
            }
        }
        if doomed.is_empty() {
            return;
        }
        let mut index = 0;
        let mut doomed = doomed.into_iter().peekable();
        let mut keep = |_: HeaderRef<'_>| {
            let remove = doomed.next_if_eq(&index).is_some();
            index += 1;
            !remove
        };
        headers.retain(&mut keep);
        trailers.retain(&mut keep);
    }

    /// Whether the field `name` is removed: a credential, hop-by-hop, one of the message's
    /// `connection_options` or configured.
    fn is_removed(&self, name: &str, connection_options: &[&str]) -> bool {
        // Pseudo-headers are not fields a sender chooses and never carry credentials
        // (RFC 9113 §8.3); `:path`/`:authority` are rewritten, not removed.
        if name.starts_with(':') {
            return false;
        }
        self.removed_fields.contains(name)
            || connection_options
                .iter()
                .any(|option| option.eq_ignore_ascii_case(name))
    }

    /// Removes userinfo and configured query parameters from the fields that hold URLs.
    fn rewrite_url_fields(&self, fields: &mut Headers, removed: &mut Removed) {
        for index in 0..fields.len() {
            let Some(HeaderRef { name, value }) = fields.get(index) else {
                break;
            };
            let named = |list: &[&str]| list.iter().any(|listed| listed.eq_ignore_ascii_case(name));
            let rewritten = if name.eq_ignore_ascii_case(":path") {
                self.redact_uri(value, UriShape::OriginForm, removed)
            } else if named(&URL_FIELDS) {
                self.redact_uri(value, UriShape::Reference, removed)
            } else if named(&AUTHORITY_FIELDS) {
                strip_authority_userinfo(value, removed)
            } else {
                None
            };
            if let Some(value) = rewritten {
                fields.set_value(index, &value);
            }
        }
    }

    /// The request target without userinfo and configured query parameters, or `None` when
    /// nothing was removed.
    fn redact_target(&self, method: &str, target: &str, removed: &mut Removed) -> Option<String> {
        // RFC 9112 §3.2.3: only CONNECT uses authority-form (`host:port`), where an '@' can
        // only be userinfo; elsewhere '@' is a legal path character.
        if method.eq_ignore_ascii_case("CONNECT") {
            return strip_authority_userinfo(target, removed);
        }
        self.redact_uri(target, UriShape::RequestTarget, removed)
    }

    /// Removes userinfo (when `shape` allows an authority) and configured parameters from the
    /// query and fragment of `uri`. Everything else is kept byte for byte. `None` when nothing
    /// was removed.
    fn redact_uri(&self, uri: &str, shape: UriShape, removed: &mut Removed) -> Option<String> {
        // RFC 3986 §3: scheme ":" ["//" authority] path ["?" query] ["#" fragment].
        let (before_fragment, fragment) = match uri.split_once('#') {
            Some((before, fragment)) => (before, Some(fragment)),
            None => (uri, None),
        };
        let (before_query, query) = match before_fragment.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (before_fragment, None),
        };

        let mut changed = false;
        // The URI up to its query, as two pieces around the userinfo when there is one.
        let (up_to_authority, after_userinfo) = match authority_start(before_query, shape) {
            Some(start) => {
                let rest = &before_query[start..];
                let end = rest.find('/').unwrap_or(rest.len());
                // RFC 3986 §3.2.1: userinfo ends at the authority's '@'; take the last one so
                // an unencoded '@' in a password cannot leave a piece behind.
                match rest[..end].rfind('@') {
                    Some(at) => {
                        removed.insert(USERINFO_ENTRY.to_owned());
                        changed = true;
                        (&before_query[..start], &rest[at + 1..])
                    }
                    None => (before_query, ""),
                }
            }
            None => (before_query, ""),
        };
        let parts = [('?', query), ('#', fragment)]
            .map(|(separator, part)| part.map(|p| (separator, p, self.remove_params(p, removed))));
        changed |= parts.iter().flatten().any(|(_, _, kept)| kept.is_some());
        // The common case, nothing to remove, allocates nothing.
        if !changed {
            return None;
        }
        let mut out = String::with_capacity(uri.len());
        out.push_str(up_to_authority);
        out.push_str(after_userinfo);
        for (separator, part, kept) in parts.into_iter().flatten() {
            match kept {
                // Drop the separator when nothing is left after it.
                Some(kept) if kept.is_empty() => {}
                Some(kept) => {
                    out.push(separator);
                    out.push_str(&kept);
                }
                None => {
                    out.push(separator);
                    out.push_str(part);
                }
            }
        }
        Some(out)
    }

    /// `part` without the `&`-separated `name[=value]` pairs whose decoded name is configured,
    /// or `None` when there are none. Kept pairs stay byte-identical and in order.
    fn remove_params(&self, part: &str, removed: &mut Removed) -> Option<String> {
        // The common case, nothing to remove, allocates nothing.
        if !part
            .split('&')
            .any(|pair| self.configured_param(pair).is_some())
        {
            return None;
        }
        let mut changed = false;
        let kept: Vec<&str> = part
            .split('&')
            .filter(|pair| match self.configured_param(pair) {
                Some(name) => {
                    removed.insert(format!("query:{name}"));
                    changed = true;
                    false
                }
                None => true,
            })
            .collect();
        changed.then(|| kept.join("&"))
    }

    /// The configured parameter name `pair` is for, matching on the name as a server decodes
    /// it (application/x-www-form-urlencoded: `+` is a space, then percent-decoding).
    fn configured_param(&self, pair: &str) -> Option<&str> {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let (name, _) = form_urlencoded::parse(raw_name.as_bytes()).next()?;
        // Every query now goes through here (the credential parameters are always on): an
        // ASCII name is compared without allocating its lowercase form.
        let found = if name.is_ascii() {
            self.extra_query_params
                .iter()
                .find(|configured| configured.eq_ignore_ascii_case(&name[..]))
        } else {
            let name = name.to_lowercase();
            self.extra_query_params
                .iter()
                .find(|configured| **configured == name)
        };
        found.map(String::as_str)
    }
}

/// Where a URI may appear, which decides whether it can start with an authority.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UriShape {
    /// HTTP/2 `:path`: path and query only (RFC 9113 §8.3.1).
    OriginForm,
    /// A request-target: origin-form or absolute-form (RFC 9112 §3.2). An origin-form target
    /// may start with `//`, which is then a path, not an authority.
    RequestTarget,
    /// A field value holding a URI reference (RFC 3986 §4.1): absolute, or network-path
    /// (`//host/path`), or relative.
    Reference,
}

/// Byte offset where the authority of `uri` (query and fragment removed) starts, if it has one.
fn authority_start(uri: &str, shape: UriShape) -> Option<usize> {
    match shape {
        UriShape::OriginForm => None,
        UriShape::Reference if uri.starts_with("//") => Some(2),
        UriShape::RequestTarget | UriShape::Reference => {
            let colon = scheme_end(uri)?;
            uri[colon..].starts_with("://").then_some(colon + 3)
        }
    }
}

/// `authority` without userinfo, or `None` when it has none. Host and `:authority` must not
/// carry userinfo (RFC 9110 §4.2.4, RFC 9113 §8.3.1), but a client can still send it.
fn strip_authority_userinfo(authority: &str, removed: &mut Removed) -> Option<String> {
    let at = authority.rfind('@')?;
    removed.insert(USERINFO_ENTRY.to_owned());
    Some(authority[at + 1..].to_owned())
}

/// The names one exchange had removed (`_capture.redacted`): a short list, deduplicated as
/// it grows and sorted once at the end. Most exchanges lose one name or two (`connection`),
/// so a list costs less than a set: no node per name, and nothing allocated for a name
/// already listed.
#[derive(Debug, Default)]
pub struct Removed(Vec<String>);

impl Removed {
    /// Starts from the names an earlier pass recorded, lowercased.
    fn from_existing(mut names: Vec<String>) -> Self {
        for name in &mut names {
            if name.chars().any(char::is_uppercase) {
                *name = name.to_lowercase();
            }
        }
        Self(names)
    }

    /// Records `name`, unless it is already listed.
    pub fn insert(&mut self, name: String) {
        if !self.0.contains(&name) {
            self.0.push(name);
        }
    }

    /// Records `name` in ASCII lowercase (a field name), unless it is already listed.
    fn insert_lowercase(&mut self, name: &str) {
        if !self
            .0
            .iter()
            .any(|listed| listed.eq_ignore_ascii_case(name))
        {
            self.0.push(name.to_ascii_lowercase());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, sorted and without duplicates.
    pub fn into_sorted(mut self) -> Vec<String> {
        self.0.sort_unstable();
        self.0.dedup();
        self.0
    }
}

impl IntoIterator for Removed {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    /// The names in sorted order.
    fn into_iter(self) -> Self::IntoIter {
        self.into_sorted().into_iter()
    }
}

/// Lowercase field names listed in `Connection` fields (RFC 9110 §7.6.1:
/// `Connection = #connection-option`, comma-separated with optional whitespace).
fn connection_options<'h>(
    fields: impl Iterator<Item = HeaderRef<'h>>,
) -> impl Iterator<Item = &'h str> {
    fields
        .filter(|field| field.name.eq_ignore_ascii_case("connection"))
        .flat_map(|field| field.value.split(','))
        .map(|option| option.trim_matches([' ', '\t']))
        .filter(|option| !option.is_empty() && !option.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capture_model::{
        clock::WallClock,
        exchange::{Body, ConnMeta, Header, HttpVersion, Protocol, Request, Response, Timing},
        har,
    };

    fn h(name: &str, value: &str) -> Header {
        Header::new(name, value)
    }

    #[test]
    fn name_set_matches_whole_names_any_case() {
        let set = NameSet::new(["Cookie", "te", "x-api-key", "cookie", ""]);
        for name in ["cookie", "COOKIE", "Te", "X-Api-Key", ""] {
            assert!(set.contains(name), "{name}");
        }
        for name in [
            "cookies",
            "cooki",
            "t",
            "tee",
            "x-api-kez",
            "a-very-long-field-name",
        ] {
            assert!(!set.contains(name), "{name}");
        }
        assert_eq!(set.by_len[6].len(), 1, "duplicates are kept once");
    }

    fn exchange(
        version: HttpVersion,
        target: &str,
        request_headers: Vec<Header>,
        response_headers: Vec<Header>,
    ) -> Exchange {
        Exchange {
            protocol: if version == HttpVersion::Http2 {
                Protocol::H2
            } else {
                Protocol::H1
            },
            request: Request {
                method: "GET".into(),
                target: target.into(),
                version,
                headers: request_headers.into(),
                headers_size: 100,
                body: Body::default(),
                trailers: Headers::new(),
            },
            response: Some(Response {
                status: 200,
                reason: "OK".into(),
                version,
                headers: response_headers.into(),
                headers_size: 50,
                body: Body::default(),
                trailers: Headers::new(),
            }),
            timing: Timing {
                request_start_ns: 1_000,
                request_end_ns: 2_000,
                response_start_ns: Some(3_000),
                response_end_ns: Some(4_000),
            },
            incomplete: None,
            conn: ConnMeta {
                id: "1:2:3".into(),
                ..ConnMeta::default()
            },
            pid: 1,
            workload: Default::default(),
            redacted: Vec::new(),
            routing_key: None,
            grpc: None,
            cgroup_id: 0,
        }
    }

    #[test]
    fn removed_names_are_lowercase_sorted_and_listed_once() {
        let mut removed = Removed::from_existing(vec!["Query:Token".into(), "cookie".into()]);
        removed.insert_lowercase("Connection");
        removed.insert_lowercase("CONNECTION");
        removed.insert_lowercase("Cookie");
        removed.insert("query:token".into());
        removed.insert("body:password".into());
        assert!(!removed.is_empty());
        assert_eq!(
            removed.into_sorted(),
            ["body:password", "connection", "cookie", "query:token"]
        );
        assert!(Removed::default().into_sorted().is_empty());
    }

    fn names(headers: &Headers) -> Vec<&str> {
        headers.iter().map(|h| h.name).collect()
    }

    /// Redacts and serialises `ex`; asserts none of `secrets` is left anywhere in the HAR line.
    fn redact_and_check(policy: &RedactionPolicy, ex: &mut Exchange, secrets: &[&str]) -> String {
        policy.apply(ex);
        let line = har::entry_json_line(ex, &WallClock::with_offset_ns(0));
        for secret in secrets {
            assert!(!line.contains(secret), "secret {secret:?} left in {line}");
        }
        line
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_fixed_name_in_every_case_in_both_directions() {
        let fixed = [
            "Authorization",
            "Authentication",
            "Cookie",
            "Proxy-Authorization",
            "Set-Cookie",
            "Set-Cookie2",
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
        ];
        for name in fixed {
            for (i, spelled) in [
                name.to_owned(),
                name.to_ascii_uppercase(),
                name.to_ascii_lowercase(),
            ]
            .into_iter()
            .enumerate()
            {
                let secret_req = format!("reqsecret-{name}-{i}");
                let secret_resp = format!("respsecret-{name}-{i}");
                let mut ex = exchange(
                    HttpVersion::Http11,
                    "/",
                    vec![
                        h("Host", "example.com"),
                        h(&spelled, &secret_req),
                        h("Accept", "*/*"),
                    ],
                    vec![h("Content-Length", "0"), h(&spelled, &secret_resp)],
                );
                redact_and_check(
                    &RedactionPolicy::default(),
                    &mut ex,
                    &[&secret_req, &secret_resp],
                );
                assert_eq!(names(&ex.request.headers), ["Host", "Accept"], "{spelled}");
                let response = ex.response.as_ref().map(|r| names(&r.headers));
                assert_eq!(response, Some(vec!["Content-Length"]), "{spelled}");
                assert_eq!(ex.redacted, [name.to_ascii_lowercase()], "{spelled}");
            }
        }
    }

    #[test]
    fn request_and_response_credentials_as_in_design() {
        let mut ex = exchange(
            HttpVersion::Http11,
            "/login",
            vec![
                h("Host", "example.com"),
                h("Authorization", "Bearer tok-A1"),
                h("authentication", "scheme tok-A2"),
                h("COOKIE", "sid=tok-A3"),
                h("Proxy-Authorization", "Basic tok-A4"),
                h("Accept", "*/*"),
            ],
            vec![
                h("Set-Cookie", "sid=tok-B1; HttpOnly"),
                h("set-cookie", "csrf=tok-B2"),
                h("Set-Cookie2", "old=tok-B3"),
                h("Content-Type", "text/plain"),
            ],
        );
        let line = redact_and_check(
            &RedactionPolicy::default(),
            &mut ex,
            &[
                "tok-A1", "tok-A2", "tok-A3", "tok-A4", "tok-B1", "tok-B2", "tok-B3",
            ],
        );
        assert_eq!(
            ex.redacted,
            strings(&[
                "authentication",
                "authorization",
                "cookie",
                "proxy-authorization",
                "set-cookie",
                "set-cookie2",
            ])
        );
        assert!(line.contains(r#""redacted":["authentication","authorization","cookie","#));
        assert_eq!(names(&ex.request.headers), ["Host", "Accept"]);
    }

    #[test]
    fn http2_lowercase_split_cookies_and_pseudo_headers() {
        let mut ex = exchange(
            HttpVersion::Http2,
            "/v1/items?id=7",
            vec![
                h(":method", "GET"),
                h(":scheme", "http"),
                h(":authority", "api.internal:8080"),
                h(":path", "/v1/items?id=7"),
                // RFC 9113 §8.2.3: cookie may be split into one field per crumb.
                h("cookie", "a=crumb-one"),
                h("cookie", "b=crumb-two"),
                h("authorization", "Bearer h2-token"),
                h("te", "trailers"),
                h("user-agent", "grpc-go/1.60"),
            ],
            vec![
                h(":status", "200"),
                h("set-cookie", "x=h2-set-one"),
                h("set-cookie", "y=h2-set-two"),
                h("content-type", "application/json"),
            ],
        );
        redact_and_check(
            &RedactionPolicy::default(),
            &mut ex,
            &[
                "crumb-one",
                "crumb-two",
                "h2-token",
                "h2-set-one",
                "h2-set-two",
            ],
        );
        assert_eq!(
            names(&ex.request.headers),
            [":method", ":scheme", ":authority", ":path", "user-agent"]
        );
        let response = ex.response.as_ref().map(|r| names(&r.headers));
        assert_eq!(response, Some(vec![":status", "content-type"]));
        assert_eq!(
            ex.redacted,
            strings(&["authorization", "cookie", "set-cookie", "te"])
        );
    }

    #[test]
    fn pseudo_headers_are_never_removed_even_when_named() {
        let policy = RedactionPolicy::new(&strings(&[":path", ":method"]), &[]);
        let mut ex = exchange(
            HttpVersion::Http2,
            "/",
            vec![
                h(":method", "GET"),
                h(":path", "/"),
                h("connection", ":method, x-hop"),
            ],
            vec![],
        );
        policy.apply(&mut ex);
        assert_eq!(names(&ex.request.headers), [":method", ":path"]);
        assert_eq!(ex.redacted, strings(&["connection"]));
    }

    #[test]
    fn fields_named_in_connection_are_removed() {
        let mut ex = exchange(
            HttpVersion::Http11,
            "/",
            vec![
                h("Host", "example.com"),
                h("Connection", "close, X-Secret-Hop"),
                h("connection", "\tx-other-hop ,,keep-alive"),
                h("X-Secret-Hop", "hop-value-1"),
                h("X-OTHER-HOP", "hop-value-2"),
                h("X-Kept", "kept-value"),
            ],
            vec![
                h("Connection", "X-Resp-Hop"),
                h("X-Resp-Hop", "hop-value-3"),
                // Named only in the request's Connection: a different message, so kept.
                h("X-Secret-Hop", "response-own-value"),
            ],
        );
        let line = redact_and_check(
            &RedactionPolicy::default(),
            &mut ex,
            &[
                "hop-value-1",
                "hop-value-2",
                "hop-value-3",
                "close, X-Secret-Hop",
            ],
        );
        assert!(line.contains("kept-value") && line.contains("response-own-value"));
        assert_eq!(names(&ex.request.headers), ["Host", "X-Kept"]);
        assert_eq!(
            ex.redacted,
            strings(&["connection", "x-other-hop", "x-resp-hop", "x-secret-hop"])
        );
    }

    #[test]
    fn trailers_are_redacted_too() {
        let policy = RedactionPolicy::new(&strings(&["X-Checksum-Key"]), &[]);
        let mut ex = exchange(HttpVersion::Http11, "/", vec![h("Host", "h")], vec![]);
        ex.request.trailers = vec![h("Authorization", "trailer-cred"), h("X-Sum", "1")].into();
        if let Some(response) = &mut ex.response {
            response.trailers = vec![
                h("grpc-status", "0"),
                h("x-checksum-key", "trailer-extra"),
                h("Set-Cookie", "trailer-cookie"),
                h("Transfer-Encoding", "chunked"),
            ]
            .into();
        }
        redact_and_check(
            &policy,
            &mut ex,
            &["trailer-cred", "trailer-extra", "trailer-cookie"],
        );
        assert_eq!(names(&ex.request.trailers), ["X-Sum"]);
        let trailers = ex.response.as_ref().map(|r| names(&r.trailers));
        assert_eq!(trailers, Some(vec!["grpc-status"]));
        assert_eq!(
            ex.redacted,
            strings(&[
                "authorization",
                "set-cookie",
                "transfer-encoding",
                "x-checksum-key"
            ])
        );
    }

    #[test]
    fn extra_headers_in_both_directions_any_case() {
        let policy = RedactionPolicy::new(&strings(&[" X-Api-Key ", "x-session", ""]), &[]);
        let mut ex = exchange(
            HttpVersion::Http11,
            "/",
            vec![
                h("Host", "h"),
                h("X-API-KEY", "extra-secret-1"),
                h("x-session", "extra-secret-2"),
            ],
            vec![
                h("X-Api-Key", "extra-secret-3"),
                h("X-Session-Id", "not-configured"),
            ],
        );
        let line = redact_and_check(
            &policy,
            &mut ex,
            &["extra-secret-1", "extra-secret-2", "extra-secret-3"],
        );
        assert!(line.contains("not-configured"));
        assert_eq!(ex.redacted, strings(&["x-api-key", "x-session"]));
    }

    fn query_policy() -> RedactionPolicy {
        RedactionPolicy::new(
            &[],
            &strings(&["token", "api_key", "access token", "Access_Token"]),
        )
    }

    fn redact_target(policy: &RedactionPolicy, target: &str) -> (String, Vec<String>) {
        let mut ex = exchange(HttpVersion::Http11, target, vec![h("Host", "h")], vec![]);
        policy.apply(&mut ex);
        (ex.request.target, ex.redacted)
    }

    #[test]
    fn query_params_removed_rest_byte_identical() {
        let policy = query_policy();
        let cases: &[(&str, &str, &[&str])] = &[
            // (target, expected target, expected redacted)
            (
                "/a?x=1&token=q-s1&y=%2F+2",
                "/a?x=1&y=%2F+2",
                &["query:token"],
            ),
            ("/a?token=q-s1", "/a", &["query:token"]),
            (
                "/a?token=q-s1&token=q-s2&TOKEN=q-s3",
                "/a",
                &["query:token"],
            ),
            ("/a?tok%65n=q-s1&b=2", "/a?b=2", &["query:token"]),
            (
                "/a?access+token=q-s1&access%20token=q-s2&c=3",
                "/a?c=3",
                &["query:access token"],
            ),
            (
                "/a?api_key=q-s1&token",
                "/a",
                &["query:api_key", "query:token"],
            ),
            // The value names another parameter: only names match.
            (
                "/a?next=token&ref=api_key",
                "/a?next=token&ref=api_key",
                &[],
            ),
            (
                "/a?next=token&token=q-s1",
                "/a?next=token",
                &["query:token"],
            ),
            // Similar names are not the configured one.
            (
                "/a?tokens=1&my_token=2&token_type=3",
                "/a?tokens=1&my_token=2&token_type=3",
                &[],
            ),
            ("/a?b=1&&token=q-s1&", "/a?b=1&&", &["query:token"]),
            ("/a?token=", "/a", &["query:token"]),
            ("/a?=token", "/a?=token", &[]),
            ("/a/token=x?b", "/a/token=x?b", &[]),
            ("*", "*", &[]),
        ];
        for (target, expected, redacted) in cases {
            let (got, got_redacted) = redact_target(&policy, target);
            assert_eq!(&got, expected, "{target}");
            assert_eq!(got_redacted, strings(redacted), "{target}");
        }
    }

    #[test]
    fn query_params_not_configured_change_nothing() {
        let (target, redacted) =
            redact_target(&RedactionPolicy::default(), "/a?token=visible&b=%zz");
        assert_eq!(target, "/a?token=visible&b=%zz");
        assert!(redacted.is_empty());
    }

    #[test]
    fn userinfo_removed_from_absolute_form() {
        let policy = query_policy();
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "http://alice:pw-secret@example.com:8080/p?token=q-s1&a=1",
                "http://example.com:8080/p?a=1",
                &["query:token", "url:userinfo"],
            ),
            (
                "http://p%40ss@w@example.com/",
                "http://example.com/",
                &["url:userinfo"],
            ),
            (
                "https://user@example.com",
                "https://example.com",
                &["url:userinfo"],
            ),
            (
                "http://example.com/mail/@someone",
                "http://example.com/mail/@someone",
                &[],
            ),
            // Origin-form: '@' and '//' are path characters.
            ("/users/@me", "/users/@me", &[]),
            ("//user:pw@host/x", "//user:pw@host/x", &[]),
        ];
        for (target, expected, redacted) in cases {
            let (got, got_redacted) = redact_target(&policy, target);
            assert_eq!(&got, expected, "{target}");
            assert_eq!(got_redacted, strings(redacted), "{target}");
        }
    }

    #[test]
    fn userinfo_removed_from_connect_host_and_authority() {
        let mut ex = exchange(
            HttpVersion::Http11,
            "proxyuser:proxy-pw@upstream:443",
            vec![h("Host", "hostuser:host-pw@upstream:443")],
            vec![],
        );
        ex.request.method = "CONNECT".into();
        redact_and_check(
            &RedactionPolicy::default(),
            &mut ex,
            &["proxy-pw", "host-pw", "proxyuser", "hostuser"],
        );
        assert_eq!(ex.request.target, "upstream:443");
        assert_eq!(ex.request.headers, [h("Host", "upstream:443")]);
        assert_eq!(ex.redacted, strings(&["url:userinfo"]));

        let mut ex = exchange(
            HttpVersion::Http2,
            "/x",
            vec![h(":authority", "u:h2-pw@svc"), h(":path", "/x")],
            vec![],
        );
        redact_and_check(&RedactionPolicy::default(), &mut ex, &["h2-pw"]);
        assert_eq!(ex.request.headers.get(0).unwrap(), h(":authority", "svc"));
    }

    #[test]
    fn http2_path_and_url_fields_lose_params_and_userinfo() {
        let policy = query_policy();
        let mut ex = exchange(
            HttpVersion::Http2,
            "/cb?code=1&token=path-secret",
            vec![
                h(":path", "/cb?code=1&token=path-secret"),
                h(
                    "referer",
                    "https://u:ref-pw@app.example/page?api_key=ref-secret#top",
                ),
            ],
            vec![
                h(":status", "302"),
                h(
                    "Location",
                    "//login:loc-pw@idp.example/cb?x=1#access_token=frag-secret&state=s",
                ),
                h("Content-Location", "/doc?token=cl-secret"),
            ],
        );
        redact_and_check(
            &policy,
            &mut ex,
            &[
                "path-secret",
                "ref-pw",
                "ref-secret",
                "loc-pw",
                "frag-secret",
                "cl-secret",
            ],
        );
        assert_eq!(ex.request.target, "/cb?code=1");
        assert_eq!(ex.request.headers.get(0).unwrap(), h(":path", "/cb?code=1"));
        assert_eq!(
            ex.request.headers.get(1).unwrap(),
            h("referer", "https://app.example/page#top")
        );
        let response = ex
            .response
            .as_ref()
            .map(|r| r.headers.clone())
            .unwrap_or_default();
        assert_eq!(
            response.get(1).unwrap(),
            h("Location", "//idp.example/cb?x=1#state=s")
        );
        assert_eq!(response.get(2).unwrap(), h("Content-Location", "/doc"));
        assert_eq!(
            ex.redacted,
            strings(&[
                "query:access_token",
                "query:api_key",
                "query:token",
                "url:userinfo"
            ])
        );
    }

    #[test]
    fn apply_is_idempotent_and_keeps_existing_entries() {
        let policy = query_policy();
        let mut ex = exchange(
            HttpVersion::Http11,
            "/a?token=1",
            vec![h("Host", "h"), h("Cookie", "c")],
            vec![],
        );
        ex.redacted = vec!["X-Earlier".into()];
        policy.apply(&mut ex);
        let once = ex.clone();
        policy.apply(&mut ex);
        assert_eq!(ex, once);
        assert_eq!(
            ex.redacted,
            strings(&["cookie", "query:token", "x-earlier"])
        );
    }

    #[test]
    fn nothing_to_remove_leaves_exchange_untouched() {
        let mut ex = exchange(
            HttpVersion::Http11,
            "/a?b=1",
            vec![h("Host", "h"), h("Accept", "*/*")],
            vec![h("Content-Type", "text/plain")],
        );
        let before = ex.clone();
        query_policy().apply(&mut ex);
        assert_eq!(ex, before);
    }

    #[test]
    fn no_response_is_fine() {
        let mut ex = exchange(
            HttpVersion::Http11,
            "/",
            vec![h("Cookie", "c-secret")],
            vec![],
        );
        ex.response = None;
        redact_and_check(&RedactionPolicy::default(), &mut ex, &["c-secret"]);
        assert_eq!(ex.redacted, strings(&["cookie"]));
    }

    #[test]
    fn debug_of_policy_shows_names_only() {
        let policy = RedactionPolicy::new(&strings(&["X-Key"]), &strings(&["token"]));
        let debug = format!("{policy:?}");
        assert!(debug.contains("x-key") && debug.contains("token"));
    }

    /// The golden entry of docs/output-schema.md is the representative exchange after default
    /// redaction; capture-model renders it from this hand-redacted form.
    #[test]
    fn default_policy_gives_the_golden_redaction() {
        let mut ex = capture_model::fixtures::representative();
        RedactionPolicy::default().apply(&mut ex);
        assert_eq!(ex, capture_model::fixtures::representative_redacted());
    }

    #[test]
    fn default_credential_headers_and_query_params() {
        let policy = RedactionPolicy::default();
        let mut ex = exchange(
            HttpVersion::Http11,
            "/o?X-Amz-Signature=qs-1&x-amz-credential=qs-2&X-Amz-Security-Token=qs-3&AWSAccessKeyId=qs-4&Signature=qs-5&sig=qs-6&X-Goog-Signature=qs-7&ACCESS_TOKEN=qs-8&api_key=qs-9&page=2",
            vec![
                h("Host", "h"),
                h("X-API-Key", "hdr-1"),
                h("api-key", "hdr-2"),
                h("X-Auth-Token", "hdr-3"),
                h("x-amz-security-token", "hdr-4"),
                h("X-Api-Key-Id", "kept"),
            ],
            vec![h("X-Auth-Token", "hdr-5")],
        );
        let secrets: Vec<String> = (1..=9)
            .map(|i| format!("qs-{i}"))
            .chain((1..=5).map(|i| format!("hdr-{i}")))
            .collect();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let line = redact_and_check(&policy, &mut ex, &secrets);
        assert!(line.contains("kept"));
        assert_eq!(ex.request.target, "/o?page=2");
        assert_eq!(
            ex.redacted,
            strings(&[
                "api-key",
                "query:access_token",
                "query:api_key",
                "query:awsaccesskeyid",
                "query:sig",
                "query:signature",
                "query:x-amz-credential",
                "query:x-amz-security-token",
                "query:x-amz-signature",
                "query:x-goog-signature",
                "x-amz-security-token",
                "x-api-key",
                "x-auth-token",
            ])
        );
    }

    #[test]
    fn bodies_are_redacted_in_both_directions_and_listed() {
        let mut ex = exchange(
            HttpVersion::Http11,
            "/oauth/token",
            vec![
                h("Host", "h"),
                h("Content-Type", "application/x-www-form-urlencoded"),
            ],
            vec![h("Content-Type", "application/json")],
        );
        ex.request.method = "POST".into();
        ex.request.body.data = b"grant_type=password&username=u&password=body-secret-1".to_vec();
        ex.request.body.wire_size = ex.request.body.data.len() as u64;
        let response = br#"{"access_token":"body-secret-2","token_type":"Bearer","refresh_token":"body-secret-3","expires_in":3600}"#;
        if let Some(r) = &mut ex.response {
            r.body.data = response.to_vec();
            r.body.wire_size = response.len() as u64;
        }
        let line = redact_and_check(
            &RedactionPolicy::default(),
            &mut ex,
            &["body-secret-1", "body-secret-2", "body-secret-3"],
        );
        assert_eq!(
            ex.redacted,
            strings(&["body:access_token", "body:password", "body:refresh_token"])
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["request"]["postData"]["text"],
            "grant_type=password&username=u&password=%5BREDACTED%5D"
        );
        assert_eq!(
            v["request"]["postData"]["_size"],
            "grant_type=password&username=u&password=body-secret-1".len()
        );
        assert_eq!(
            v["response"]["content"]["text"],
            r#"{"access_token":"[REDACTED]","token_type":"Bearer","refresh_token":"[REDACTED]","expires_in":3600}"#
        );
        // The size is the body's before redaction, as decoded.
        assert_eq!(v["response"]["content"]["size"], response.len());
        assert_eq!(v["response"]["bodySize"], response.len());

        // The same exchange with the defaults off and nothing configured is untouched.
        let policy = RedactionPolicy::default().with_body_fields(&[], false);
        let mut ex = exchange(
            HttpVersion::Http11,
            "/",
            vec![h("Content-Type", "application/json")],
            vec![],
        );
        ex.request.body.data = br#"{"password":"visible"}"#.to_vec();
        policy.apply(&mut ex);
        assert_eq!(ex.request.body.data, br#"{"password":"visible"}"#);
        assert!(ex.redacted.is_empty());
    }

    /// A gzip-encoded login and token response through the real HTTP/1 decoder, whole and
    /// cut by the capture limit inside the password: decoded, then redacted.
    #[test]
    fn gzip_encoded_login_is_redacted_after_decoding() {
        use capture_http::http1::{Http1Conn, Http1Limits, Http1Output, Side};
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write as _;

        fn gzip(data: &[u8]) -> Vec<u8> {
            let mut e = GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        // The long, compressible user name puts the password past what a short capture limit
        // keeps decoded, while all of the gzip stream is still captured.
        let login = format!(
            r#"{{"username":"{}","password":"gz-secret-password","remember":true}}"#,
            "a".repeat(500)
        );
        let login = login.as_bytes();
        let value_start = 500 + r#"{"username":"","password":"#.len();
        let token = br#"{"id_token":"gz-secret-id","access_token":"gz-secret-access"}"#;
        let (login_gz, token_gz) = (gzip(login), gzip(token));
        let mut request = format!(
            "POST /login HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            login_gz.len()
        )
        .into_bytes();
        request.extend_from_slice(&login_gz);
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            token_gz.len()
        )
        .into_bytes();
        response.extend_from_slice(&token_gz);

        // The second limit ends inside the password's value.
        for max_body_bytes in [1024 * 1024, value_start + 6] {
            let mut conn = Http1Conn::new(Http1Limits {
                max_body_bytes,
                ..Http1Limits::default()
            });
            let mut out = Vec::new();
            conn.on_data(Side::Request, &request, 1, &mut out);
            conn.on_data(Side::Response, &response, 2, &mut out);
            let Some(Http1Output::Exchange(mut ex)) = out.into_iter().next() else {
                panic!("no exchange");
            };
            assert_eq!(ex.request.body.decoded_from.as_deref(), Some("gzip"));
            let line = redact_and_check(
                &RedactionPolicy::default(),
                &mut ex,
                &["gz-secret", "gz-secr", "gz-"],
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let kept = String::from_utf8_lossy(&login[..value_start]).into_owned();
            if max_body_bytes < 1024 {
                assert_eq!(
                    ex.request.body.data,
                    format!(r#"{kept}"[REDACTED]""#).as_bytes()
                );
                assert_eq!(ex.request.body.decoded_size, Some(max_body_bytes as u64));
                assert_eq!(v["_capture"]["truncated"]["request"], true);
                assert_eq!(
                    ex.redacted,
                    strings(&["body:access_token", "body:id_token", "body:password"])
                );
            } else {
                assert_eq!(
                    ex.request.body.data,
                    format!(r#"{kept}"[REDACTED]","remember":true}}"#).as_bytes()
                );
                assert_eq!(v["response"]["content"]["size"], token.len());
                assert_eq!(v["response"]["bodySize"], token_gz.len());
            }
        }
    }

    mod http2_decoded {
        use capture_http::http2::frame::{FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, write_frame};
        use capture_http::http2::hpack::Indexing;
        use capture_http::http2::testing::{Wire, exchanges, run};
        use capture_http::http2::{Http2Conn, Http2Limits};

        use super::*;

        /// What the decoder hands on goes through the same redaction as HTTP/1: split cookies,
        /// lowercase names, connection-specific fields, `:path` query parameters; never-indexed
        /// secrets are already gone. Nothing secret reaches the HAR line.
        #[test]
        fn decoded_exchanges_are_redacted_like_http1() {
            let mut w = Wire::new();
            let mut block = Vec::new();
            let enc = &mut w.client_enc;
            for (n, v, how) in [
                (":method", "GET", Indexing::Incremental),
                (":scheme", "http", Indexing::Incremental),
                (":authority", "user:pw-secret@api:80", Indexing::Incremental),
                (":path", "/q?token=tok-secret&keep=1", Indexing::Incremental),
                ("cookie", "a=crumb-secret-1", Indexing::Incremental),
                ("cookie", "b=crumb-secret-2", Indexing::Never),
                ("authorization", "Bearer auth-secret", Indexing::Never),
                ("x-session", "never-indexed-secret", Indexing::Never),
                ("te", "trailers", Indexing::Without),
                ("keep-alive", "timeout=5", Indexing::Without),
            ] {
                enc.field(n.as_bytes(), v.as_bytes(), how, &mut block);
            }
            write_frame(
                &mut w.client,
                HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                1,
                &block,
            );
            w.response(
                1,
                &[
                    (":status", "200"),
                    ("set-cookie", "sid=set-secret"),
                    ("location", "/next?token=loc-secret"),
                ],
                false,
            );
            w.server_data(1, b"{}", false);
            w.response(1, &[("set-cookie", "late=trailer-secret")], true);
            let mut c = Http2Conn::new(Http2Limits::default());
            let out = run(&mut c, &w);
            let mut ex = exchanges(&out)[0].clone();
            RedactionPolicy::new(&[], &["token".to_string()]).apply(&mut ex);
            let line = har::entry_json_line(&ex, &WallClock::with_offset_ns(0));
            for secret in [
                "pw-secret",
                "tok-secret",
                "crumb-secret",
                "auth-secret",
                "never-indexed-secret",
                "set-secret",
                "loc-secret",
                "trailer-secret",
                "timeout=5",
            ] {
                assert!(!line.contains(secret), "{secret} in {line}");
            }
            assert_eq!(
                ex.redacted,
                [
                    "authorization",
                    "cookie",
                    "keep-alive",
                    "query:token",
                    "set-cookie",
                    "te",
                    "url:userinfo",
                    "x-session"
                ]
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["request"]["url"], "http://api:80/q?keep=1");
            assert_eq!(v["request"]["httpVersion"], "HTTP/2");
            assert_eq!(v["response"]["httpVersion"], "HTTP/2");
            assert_eq!(v["_capture"]["protocol"], "h2");
        }
    }
}
