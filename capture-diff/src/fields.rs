//! The field diff of one pair: what differs between a baseline response and a candidate
//! response, as findings with an RFC 6901 pointer and an index-free field path.
//!
//! Both responses are seen as one document each: `status`, `grpc.status`, `grpc.message`,
//! `headers.<lowercase name>` and `body` (a JSON value when the body parses as JSON; a gRPC
//! body as its list of messages; else the bytes). Pointers point into that document (`/body/items/3/price`): into the candidate's for
//! an add, a replace or a reorder, into the baseline's for a removal. Paths drop array indices
//! (`body.items[].price`), so the same field of every element and of every pair is counted
//! together.
//!
//! Rules (issue 11): JSON key order is ignored; arrays of scalars are multisets, with a separate
//! `reorder` finding when only the order differs; arrays of objects are matched by a unique
//! `id`-like key, else by position; numbers compare by value (`1` = `1.0`). Headers compare by
//! name, hop-by-hop fields are not compared, and the values of volatile headers (dates, request
//! ids, trace context) are not compared, only their presence.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use capture_model::exchange::{Exchange, HeaderRef};
use jsonptr::PointerBuf;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of difference a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Add,
    Remove,
    Replace,
    TypeChange,
    Reorder,
    StatusChange,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Replace => "replace",
            Self::TypeChange => "type change",
            Self::Reorder => "reorder",
            Self::StatusChange => "status change",
        }
    }
}

/// One difference, before it is classified.
#[derive(Clone, Debug, PartialEq)]
pub struct RawFinding {
    pub pointer: String,
    pub path: String,
    pub kind: FindingKind,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// Headers whose values change from one response to the next by design: only their presence is
/// compared. `content-length` follows the body, which is compared on its own.
pub const VOLATILE_HEADERS: [&str; 27] = [
    "age",
    "b3",
    "baggage",
    "content-length",
    "correlation-id",
    "date",
    "expires",
    "grpc-trace-bin",
    "last-modified",
    "request-id",
    "server-timing",
    "traceparent",
    "tracestate",
    "uber-trace-id",
    "x-amz-cf-id",
    "x-amzn-requestid",
    "x-amzn-trace-id",
    "x-b3-flags",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-spanid",
    "x-b3-traceid",
    "x-cloud-trace-context",
    "x-correlation-id",
    "x-envoy-upstream-service-time",
    "x-request-id",
    "x-response-time",
];

/// A response seen as a document.
#[derive(Clone, Debug)]
pub struct Doc {
    pub status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    /// Lowercase name → values joined with `, ` (RFC 9110 §5.3), pseudo-headers left out.
    pub headers: BTreeMap<String, String>,
    pub body: BodyDoc,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BodyDoc {
    Empty,
    Json(Value),
    Bytes(Vec<u8>),
}

impl Doc {
    /// The response of `ex` as a document; `None` when there is no response.
    pub fn of(ex: &Exchange) -> Option<Self> {
        let response = ex.response.as_ref()?;
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for HeaderRef { name, value } in response.headers.iter().chain(&response.trailers) {
            let name = name.to_ascii_lowercase();
            // gRPC status travels in trailers; it is compared as grpc.status instead.
            if name.starts_with(':') || name == "grpc-status" || name == "grpc-message" {
                continue;
            }
            headers
                .entry(name)
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
        let data = &response.body.data;
        let grpc = headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("application/grpc"));
        let body = if data.is_empty() {
            BodyDoc::Empty
        } else if let Some(messages) = grpc.then(|| grpc_messages(data)).flatten() {
            BodyDoc::Json(messages)
        } else {
            match serde_json::from_slice::<Value>(data) {
                Ok(value) => BodyDoc::Json(value),
                Err(_) => BodyDoc::Bytes(data.clone()),
            }
        };
        Some(Self {
            status: Some(response.status),
            grpc_status: ex.grpc.as_ref().and_then(|g| g.status),
            grpc_message: ex.grpc.as_ref().and_then(|g| g.message.clone()),
            headers,
            body,
        })
    }

    /// Every field path present in the document (for "always present").
    pub fn present_paths(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.insert("status".to_owned());
        if self.grpc_status.is_some() {
            out.insert("grpc.status".to_owned());
        }
        if self.grpc_message.is_some() {
            out.insert("grpc.message".to_owned());
        }
        for name in self.headers.keys() {
            out.insert(format!("headers.{name}"));
        }
        match &self.body {
            BodyDoc::Empty => {}
            BodyDoc::Bytes(_) => {
                out.insert("body".to_owned());
            }
            BodyDoc::Json(value) => {
                out.insert("body".to_owned());
                json_paths(value, "body", &mut out);
            }
        }
        out
    }
}

/// A gRPC body (length-prefixed messages, gRPC over HTTP/2 spec) as a JSON list of
/// `{"compressed", "message"}` (base64), so messages compare in order, one by one; `None` when
/// the bytes are not whole messages. Without the schema the messages are not decoded further.
fn grpc_messages(data: &[u8]) -> Option<Value> {
    use base64::Engine as _;
    let mut rest = data;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let flag = *rest.first()?;
        let len = usize::try_from(u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?)).ok()?;
        let message = rest.get(5..5 + len)?;
        out.push(serde_json::json!({
            "compressed": flag & 1 == 1,
            "message": base64::engine::general_purpose::STANDARD.encode(message),
        }));
        rest = &rest[5 + len..];
    }
    Some(Value::Array(out))
}

fn json_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let p = format!("{path}.{key}");
                json_paths(v, &p, out);
                out.insert(p);
            }
        }
        Value::Array(items) => {
            let p = format!("{path}[]");
            for v in items {
                json_paths(v, &p, out);
            }
            if !items.is_empty() {
                out.insert(p);
            }
        }
        _ => {}
    }
}

/// Compares two documents. `extra_volatile` adds lowercase header names to
/// [`VOLATILE_HEADERS`].
pub fn diff_docs(old: &Doc, new: &Doc, extra_volatile: &[String]) -> Vec<RawFinding> {
    let mut out = Vec::new();
    if old.status != new.status {
        out.push(RawFinding {
            pointer: "/status".into(),
            path: "status".into(),
            kind: FindingKind::StatusChange,
            old: old.status.map(Value::from),
            new: new.status.map(Value::from),
        });
    }
    if old.grpc_status != new.grpc_status {
        out.push(RawFinding {
            pointer: "/grpc/status".into(),
            path: "grpc.status".into(),
            kind: FindingKind::StatusChange,
            old: old.grpc_status.map(Value::from),
            new: new.grpc_status.map(Value::from),
        });
    }
    if old.grpc_message != new.grpc_message {
        let kind = match (&old.grpc_message, &new.grpc_message) {
            (None, _) => FindingKind::Add,
            (_, None) => FindingKind::Remove,
            _ => FindingKind::Replace,
        };
        out.push(RawFinding {
            pointer: "/grpc/message".into(),
            path: "grpc.message".into(),
            kind,
            old: old.grpc_message.clone().map(Value::from),
            new: new.grpc_message.clone().map(Value::from),
        });
    }
    diff_headers(&old.headers, &new.headers, extra_volatile, &mut out);
    diff_bodies(&old.body, &new.body, &mut out);
    out
}

fn header_pointer(name: &str) -> String {
    PointerBuf::from_tokens(["headers", name]).to_string()
}

fn diff_headers(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    extra_volatile: &[String],
    out: &mut Vec<RawFinding>,
) {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        if capture_model::exchange::is_hop_by_hop(name) {
            continue;
        }
        let volatile =
            VOLATILE_HEADERS.contains(&name.as_str()) || extra_volatile.iter().any(|v| v == name);
        let (kind, o, n) = match (old.get(name), new.get(name)) {
            (Some(o), None) => (FindingKind::Remove, Some(o), None),
            (None, Some(n)) => (FindingKind::Add, None, Some(n)),
            (Some(o), Some(n)) if o != n && !volatile => (FindingKind::Replace, Some(o), Some(n)),
            _ => continue,
        };
        out.push(RawFinding {
            pointer: header_pointer(name),
            path: format!("headers.{name}"),
            kind,
            old: o.cloned().map(Value::from),
            new: n.cloned().map(Value::from),
        });
    }
}

/// A body's bytes as a JSON string for the report (lossy UTF-8).
fn bytes_value(data: &[u8]) -> Value {
    Value::from(String::from_utf8_lossy(data).into_owned())
}

fn body_value(body: &BodyDoc) -> Option<Value> {
    match body {
        BodyDoc::Empty => None,
        BodyDoc::Json(v) => Some(v.clone()),
        BodyDoc::Bytes(b) => Some(bytes_value(b)),
    }
}

fn diff_bodies(old: &BodyDoc, new: &BodyDoc, out: &mut Vec<RawFinding>) {
    let root = || RawFinding {
        pointer: "/body".into(),
        path: "body".into(),
        kind: FindingKind::Replace,
        old: body_value(old),
        new: body_value(new),
    };
    match (old, new) {
        (BodyDoc::Empty, BodyDoc::Empty) => {}
        (BodyDoc::Empty, _) => out.push(RawFinding {
            kind: FindingKind::Add,
            ..root()
        }),
        (_, BodyDoc::Empty) => out.push(RawFinding {
            kind: FindingKind::Remove,
            ..root()
        }),
        (BodyDoc::Json(o), BodyDoc::Json(n)) => {
            let mut pointer = PointerBuf::root();
            pointer.push_back("body");
            diff_json(o, n, &mut pointer, "body", out);
        }
        (BodyDoc::Bytes(o), BodyDoc::Bytes(n)) => {
            if o != n {
                out.push(root());
            }
        }
        _ => out.push(RawFinding {
            kind: FindingKind::TypeChange,
            ..root()
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Scalars equal by value: numbers compare as numbers (`1` = `1.0`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// A key for multiset comparison of scalars (numbers by value).
fn scalar_key(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("n:{f}")),
        other => other.to_string(),
    }
}

fn with<T>(pointer: &mut PointerBuf, token: T, f: impl FnOnce(&mut PointerBuf))
where
    T: Into<jsonptr::Token<'static>>,
{
    pointer.push_back(token);
    f(pointer);
    pointer.pop_back();
}

fn push(
    out: &mut Vec<RawFinding>,
    pointer: &PointerBuf,
    path: &str,
    kind: FindingKind,
    old: Option<&Value>,
    new: Option<&Value>,
) {
    out.push(RawFinding {
        pointer: pointer.to_string(),
        path: path.to_owned(),
        kind,
        old: old.cloned(),
        new: new.cloned(),
    });
}

fn diff_json(
    old: &Value,
    new: &Value,
    pointer: &mut PointerBuf,
    path: &str,
    out: &mut Vec<RawFinding>,
) {
    if type_name(old) != type_name(new) {
        push(
            out,
            pointer,
            path,
            FindingKind::TypeChange,
            Some(old),
            Some(new),
        );
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (key, ov) in o {
                let p = format!("{path}.{key}");
                with(pointer, key.clone(), |pointer| match n.get(key) {
                    Some(nv) => diff_json(ov, nv, pointer, &p, out),
                    None => push(out, pointer, &p, FindingKind::Remove, Some(ov), None),
                });
            }
            for (key, nv) in n {
                if !o.contains_key(key) {
                    let p = format!("{path}.{key}");
                    with(pointer, key.clone(), |pointer| {
                        push(out, pointer, &p, FindingKind::Add, None, Some(nv));
                    });
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => diff_arrays(o, n, pointer, path, out),
        _ => {
            if !scalar_eq(old, new) {
                push(
                    out,
                    pointer,
                    path,
                    FindingKind::Replace,
                    Some(old),
                    Some(new),
                );
            }
        }
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn diff_arrays(
    o: &[Value],
    n: &[Value],
    pointer: &mut PointerBuf,
    path: &str,
    out: &mut Vec<RawFinding>,
) {
    let item_path = format!("{path}[]");
    if o.iter().chain(n).all(is_scalar) {
        // Multisets: each old element takes one equal new element.
        let mut unused: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, v) in n.iter().enumerate().rev() {
            unused.entry(scalar_key(v)).or_default().push(i);
        }
        let mut removed = false;
        for (i, v) in o.iter().enumerate() {
            if unused.get_mut(&scalar_key(v)).and_then(Vec::pop).is_none() {
                removed = true;
                with(pointer, i, |pointer| {
                    push(out, pointer, &item_path, FindingKind::Remove, Some(v), None);
                });
            }
        }
        let mut added: Vec<usize> = unused.into_values().flatten().collect();
        added.sort_unstable();
        for &i in &added {
            with(pointer, i, |pointer| {
                push(out, pointer, &item_path, FindingKind::Add, None, n.get(i));
            });
        }
        let same_order = o.len() == n.len() && o.iter().zip(n).all(|(a, b)| scalar_eq(a, b));
        if !removed && added.is_empty() && !same_order {
            push(
                out,
                pointer,
                path,
                FindingKind::Reorder,
                Some(&Value::Array(o.to_vec())),
                Some(&Value::Array(n.to_vec())),
            );
        }
        return;
    }
    if let Some(key) = id_key(o, n) {
        let index: HashMap<String, usize> = n
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.get(&key).map(|id| (scalar_key(id), i)))
            .collect();
        let mut matched_new = vec![false; n.len()];
        let mut order = Vec::new();
        for (i, ov) in o.iter().enumerate() {
            let id = ov.get(&key).map(scalar_key).unwrap_or_default();
            match index.get(&id) {
                Some(&j) => {
                    matched_new[j] = true;
                    order.push(j);
                    with(pointer, j, |pointer| {
                        diff_json(ov, &n[j], pointer, &item_path, out)
                    });
                }
                None => with(pointer, i, |pointer| {
                    push(
                        out,
                        pointer,
                        &item_path,
                        FindingKind::Remove,
                        Some(ov),
                        None,
                    );
                }),
            }
        }
        for (j, nv) in n.iter().enumerate() {
            if !matched_new[j] {
                with(pointer, j, |pointer| {
                    push(out, pointer, &item_path, FindingKind::Add, None, Some(nv));
                });
            }
        }
        if order.windows(2).any(|w| w[0] > w[1]) {
            let ids = |items: &[Value]| {
                Value::Array(items.iter().filter_map(|v| v.get(&key).cloned()).collect())
            };
            push(
                out,
                pointer,
                path,
                FindingKind::Reorder,
                Some(&ids(o)),
                Some(&ids(n)),
            );
        }
        return;
    }
    for (i, (ov, nv)) in o.iter().zip(n).enumerate() {
        with(pointer, i, |pointer| {
            diff_json(ov, nv, pointer, &item_path, out)
        });
    }
    for (i, ov) in o.iter().enumerate().skip(n.len()) {
        with(pointer, i, |pointer| {
            push(
                out,
                pointer,
                &item_path,
                FindingKind::Remove,
                Some(ov),
                None,
            );
        });
    }
    for (i, nv) in n.iter().enumerate().skip(o.len()) {
        with(pointer, i, |pointer| {
            push(out, pointer, &item_path, FindingKind::Add, None, Some(nv));
        });
    }
}

/// Names that identify an element, in the order they are tried; then any key ending in `_id`
/// or `Id`.
const ID_KEYS: [&str; 5] = ["id", "_id", "uuid", "key", "name"];

/// A key every element of both arrays (all objects) has, with a scalar value unique within
/// each array.
fn id_key(o: &[Value], n: &[Value]) -> Option<String> {
    let objects: Vec<&serde_json::Map<String, Value>> = o
        .iter()
        .chain(n)
        .map(Value::as_object)
        .collect::<Option<_>>()?;
    let first = objects.first()?;
    let mut candidates: Vec<String> = ID_KEYS.iter().map(|k| (*k).to_owned()).collect();
    let mut suffixed: Vec<String> = first
        .keys()
        .filter(|k| k.ends_with("_id") || k.ends_with("Id"))
        .cloned()
        .collect();
    suffixed.sort();
    candidates.extend(suffixed);
    let unique_in = |items: &[Value], key: &str| {
        let mut seen = BTreeSet::new();
        items.iter().all(|v| {
            v.get(key)
                .filter(|id| is_scalar(id) && !id.is_null())
                .is_some_and(|id| seen.insert(scalar_key(id)))
        })
    };
    candidates
        .into_iter()
        .find(|key| unique_in(o, key) && unique_in(n, key))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(v: Value) -> Doc {
        Doc {
            status: Some(200),
            grpc_status: None,
            grpc_message: None,
            headers: BTreeMap::new(),
            body: BodyDoc::Json(v),
        }
    }

    fn findings(old: Value, new: Value) -> Vec<(String, String, FindingKind)> {
        diff_docs(&body(old), &body(new), &[])
            .into_iter()
            .map(|f| (f.pointer, f.path, f.kind))
            .collect()
    }

    fn f(pointer: &str, path: &str, kind: FindingKind) -> (String, String, FindingKind) {
        (pointer.to_owned(), path.to_owned(), kind)
    }

    #[test]
    fn key_order_and_number_form_are_ignored() {
        assert_eq!(
            findings(
                json!({"a": 1, "b": {"c": 2.0}}),
                json!({"b": {"c": 2}, "a": 1.0})
            ),
            vec![]
        );
    }

    #[test]
    fn add_remove_replace_type_change() {
        use FindingKind::*;
        assert_eq!(
            findings(
                json!({"keep": 1, "gone": true, "price": 10, "n": "1"}),
                json!({"keep": 1, "new": null, "price": 12, "n": 1}),
            ),
            vec![
                f("/body/gone", "body.gone", Remove),
                f("/body/n", "body.n", TypeChange),
                f("/body/price", "body.price", Replace),
                f("/body/new", "body.new", Add),
            ]
        );
    }

    #[test]
    fn pointers_escape_per_rfc_6901() {
        use FindingKind::*;
        assert_eq!(
            findings(json!({"a/b": {"m~n": 1}}), json!({"a/b": {"m~n": 2}})),
            vec![f("/body/a~1b/m~0n", "body.a/b.m~n", Replace)]
        );
    }

    #[test]
    fn scalar_arrays_are_multisets_with_a_reorder_finding() {
        use FindingKind::*;
        assert_eq!(
            findings(json!({"t": ["a", "b", "c"]}), json!({"t": ["c", "a", "b"]})),
            vec![f("/body/t", "body.t", Reorder)]
        );
        assert_eq!(
            findings(json!({"t": ["a", "b", "b"]}), json!({"t": ["b", "x", "a"]})),
            vec![
                f("/body/t/2", "body.t[]", Remove),
                f("/body/t/1", "body.t[]", Add),
            ]
        );
        assert_eq!(findings(json!([1, 2]), json!([1, 2])), vec![]);
    }

    #[test]
    fn object_arrays_match_by_id_else_position() {
        use FindingKind::*;
        assert_eq!(
            findings(
                json!({"items": [{"id": 1, "p": 5}, {"id": 2, "p": 6}, {"id": 3, "p": 7}]}),
                json!({"items": [{"id": 2, "p": 6}, {"id": 1, "p": 9}, {"id": 4, "p": 1}]}),
            ),
            vec![
                f("/body/items/1/p", "body.items[].p", Replace),
                f("/body/items/2", "body.items[]", Remove),
                f("/body/items/2", "body.items[]", Add),
                f("/body/items", "body.items", Reorder),
            ]
        );
        // `sku_id` is the id when `id` is not unique.
        assert_eq!(
            findings(
                json!([{"id": 1, "sku_id": "a", "q": 1}, {"id": 1, "sku_id": "b", "q": 2}]),
                json!([{"id": 1, "sku_id": "b", "q": 2}, {"id": 1, "sku_id": "a", "q": 3}]),
            ),
            vec![
                f("/body/1/q", "body[].q", Replace),
                f("/body", "body", Reorder)
            ]
        );
        // No unique key: by position.
        assert_eq!(
            findings(json!([{"q": 1}, {"q": 2}]), json!([{"q": 2}])),
            vec![
                f("/body/0/q", "body[].q", Replace),
                f("/body/1", "body[]", Remove)
            ]
        );
    }

    fn doc(status: u16, headers: &[(&str, &str)], body: BodyDoc) -> Doc {
        Doc {
            status: Some(status),
            grpc_status: None,
            grpc_message: None,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body,
        }
    }

    #[test]
    fn headers_volatile_values_hop_by_hop_and_status() {
        use FindingKind::*;
        let old = doc(
            200,
            &[
                ("date", "Mon"),
                ("x-request-id", "1"),
                ("etag", "a"),
                ("connection", "close"),
                ("x-gone", "1"),
            ],
            BodyDoc::Empty,
        );
        let new = doc(
            500,
            &[
                ("date", "Tue"),
                ("etag", "b"),
                ("x-new", "1"),
                ("x-custom", "v"),
            ],
            BodyDoc::Empty,
        );
        let got: Vec<_> = diff_docs(&old, &new, &["x-custom".to_owned()])
            .into_iter()
            .map(|f| (f.pointer, f.path, f.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                f("/status", "status", StatusChange),
                f("/headers/etag", "headers.etag", Replace),
                f("/headers/x-custom", "headers.x-custom", Add),
                f("/headers/x-gone", "headers.x-gone", Remove),
                f("/headers/x-new", "headers.x-new", Add),
                f("/headers/x-request-id", "headers.x-request-id", Remove),
            ]
        );
    }

    #[test]
    fn non_json_bodies_compare_bytewise() {
        use FindingKind::*;
        let a = doc(200, &[], BodyDoc::Bytes(b"hello".to_vec()));
        let b = doc(200, &[], BodyDoc::Bytes(b"hellp".to_vec()));
        let j = doc(200, &[], BodyDoc::Json(json!({})));
        let e = doc(200, &[], BodyDoc::Empty);
        let kinds = |x: &Doc, y: &Doc| -> Vec<FindingKind> {
            diff_docs(x, y, &[]).into_iter().map(|f| f.kind).collect()
        };
        assert_eq!(kinds(&a, &a), vec![]);
        assert_eq!(kinds(&a, &b), vec![Replace]);
        assert_eq!(kinds(&a, &j), vec![TypeChange]);
        assert_eq!(kinds(&e, &a), vec![Add]);
        assert_eq!(kinds(&j, &e), vec![Remove]);
    }

    #[test]
    fn present_paths_are_index_free() {
        let d = doc(
            200,
            &[("etag", "a")],
            BodyDoc::Json(json!({"items": [{"id": 1}, {"id": 2, "x": null}], "e": []})),
        );
        let paths: Vec<String> = d.present_paths().into_iter().collect();
        assert_eq!(
            paths,
            [
                "body",
                "body.e",
                "body.items",
                "body.items[]",
                "body.items[].id",
                "body.items[].x",
                "headers.etag",
                "status",
            ]
        );
    }

    #[test]
    fn grpc_bodies_compare_message_by_message() {
        let mut ex = capture_model::fixtures::representative_redacted();
        let response = ex.response.as_mut().unwrap();
        response.headers =
            capture_model::exchange::Headers::from([("content-type", "application/grpc+proto")]);
        response.body.data = b"\0\0\0\0\x02hi\x01\0\0\0\x01z".to_vec();
        let old = Doc::of(&ex).unwrap();
        assert_eq!(
            old.body,
            BodyDoc::Json(json!([
                {"compressed": false, "message": "aGk="},
                {"compressed": true, "message": "eg=="},
            ]))
        );
        ex.response.as_mut().unwrap().body.data = b"\0\0\0\0\x02ho\x01\0\0\0\x01z".to_vec();
        let new = Doc::of(&ex).unwrap();
        let got: Vec<_> = diff_docs(&old, &new, &[])
            .into_iter()
            .map(|f| (f.pointer, f.path, f.kind))
            .collect();
        assert_eq!(
            got,
            vec![f("/body/0/message", "body[].message", FindingKind::Replace)]
        );
        // Not whole messages: bytes.
        ex.response.as_mut().unwrap().body.data = b"\0\0\0\0\x09hi".to_vec();
        assert!(matches!(Doc::of(&ex).unwrap().body, BodyDoc::Bytes(_)));
    }
}
