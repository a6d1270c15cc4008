//! A fake Kubernetes API server for the pod watcher: real Pod JSON (built with k8s-openapi) over
//! plain HTTP/1.1, with the list and watch semantics the watcher relies on and the failures it
//! must survive.
//!
//! - `GET /api/v1/pods?fieldSelector=spec.nodeName=N` lists the pods of node N with the
//!   current `resourceVersion`;
//! - `...&watch=true&resourceVersion=V` streams (chunked) every change after V as
//!   `ADDED`/`MODIFIED`/`DELETED` events, then waits for more until `timeoutSeconds`;
//! - [`FakeKubeApi::expire_history`] makes every older version "too old": open watches get an
//!   `ERROR` event with code 410 and watches from an old version are answered the same way, so
//!   the client must list again; [`FakeKubeApi::reject_next_watch_with_410`] answers a watch
//!   request with an HTTP 410 status instead;
//! - [`FakeKubeApi::set_outage`] answers everything with an HTTP error (e.g. 500) or, with
//!   [`Outage::DropConnections`], closes every connection without an answer, and cuts the open
//!   watches.
//!
//! Every request is recorded, so tests can check what was asked (the field selector, relists).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Value, json};

/// How the fake server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Every request is answered with this HTTP status and a `Status` body.
    Status(u16),
    /// Every connection is closed as soon as it is accepted.
    DropConnections,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// Current objects by `namespace/name`.
    pods: BTreeMap<String, Value>,
    /// Every change: (resourceVersion, type, object).
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a version older than this are told 410 Gone.
    oldest_valid_rv: u64,
    /// Bumped to end every open watch (with a 410 event when `gone` is set for that epoch).
    epoch: u64,
    gone_epoch: Option<u64>,
    outage: Option<Outage>,
    reject_watch_410: bool,
    requests: Vec<String>,
    /// Watch streams open now.
    open_watches: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The server; stopped (and its threads joined) on drop.
pub struct FakeKubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeKubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeKubeApi({})", self.addr)
    }
}

impl FakeKubeApi {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1000,
                oldest_valid_rv: 0,
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accept_shared);
                    let _ = thread::Builder::new()
                        .name("fake-kube-conn".into())
                        .spawn(move || serve(&shared, stream));
                }
            })?;
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server (plain HTTP, no credentials) into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Creates or replaces the pod (an `ADDED` or `MODIFIED` event).
    pub fn apply(&self, pod: &Pod) -> Result<()> {
        let mut object = serde_json::to_value(pod)?;
        let key = key_of(&object)?;
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["apiVersion"] = json!("v1");
        object["kind"] = json!("Pod");
        let kind = if st.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.pods.insert(key, object.clone());
        st.history.push((rv, kind, object));
        drop(st);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Deletes the pod (a `DELETED` event); a no-op when it does not exist.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut st = self.shared.lock();
        if let Some(mut object) = st.pods.remove(&format!("{namespace}/{name}")) {
            st.rv += 1;
            let rv = st.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.history.push((rv, "DELETED", object));
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Compacts history: open watches get an ERROR 410 event, and watches from any version seen
    /// so far are refused the same way, so the client has to list again.
    pub fn expire_history(&self) {
        let mut st = self.shared.lock();
        st.oldest_valid_rv = st.rv;
        st.epoch += 1;
        st.gone_epoch = Some(st.epoch);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Answers the next watch request with an HTTP 410 status (not an event).
    pub fn reject_next_watch_with_410(&self) {
        self.shared.lock().reject_watch_410 = true;
    }

    /// Ends every open watch by closing its connection mid-stream.
    pub fn drop_watches(&self) {
        let mut st = self.shared.lock();
        st.epoch += 1;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Starts (`Some`) or ends (`None`) an outage; starting one cuts the open watches.
    pub fn set_outage(&self, outage: Option<Outage>) {
        let mut st = self.shared.lock();
        st.outage = outage;
        if outage.is_some() {
            st.epoch += 1;
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// Request targets (path and query) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Lists (not watches) received so far.
    pub fn list_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/pods") && !r.contains("watch=true"))
            .count()
    }

    /// Watch requests received so far.
    pub fn watch_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
    }

    /// Waits until `what` holds of the server, up to `timeout`. Blocks the thread: from async
    /// code, poll the server's getters instead.
    pub fn wait_for(&self, timeout: Duration, what: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if what(self) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        what(self)
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.lock().epoch += 1;
        self.shared.changed.notify_all();
        // Unblock accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn key_of(object: &Value) -> Result<String> {
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .context("pod without metadata.namespace")?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .context("pod without metadata.name")?;
    Ok(format!("{ns}/{name}"))
}

fn node_of(object: &Value) -> &str {
    object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Handles one connection: one request, one answer, then close.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let outage = {
        let mut st = shared.lock();
        st.requests.push(target.clone());
        st.outage
    };
    let mut out = stream;
    match outage {
        Some(Outage::DropConnections) => return,
        Some(Outage::Status(code)) => {
            let _ = respond(&mut out, code, &status_body(code, "fake outage"));
            return;
        }
        None => {}
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    if path != "/api/v1/pods" {
        let _ = respond(&mut out, 404, &status_body(404, "not found"));
        return;
    }
    let node = params
        .get("fieldSelector")
        .and_then(|s| s.strip_prefix("spec.nodeName="))
        .map(str::to_string);
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch(shared, &mut out, node.as_deref(), &params);
    } else {
        let st = shared.lock();
        let items: Vec<&Value> = st
            .pods
            .values()
            .filter(|p| node.as_deref().is_none_or(|n| node_of(p) == n))
            .collect();
        let body = json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        });
        drop(st);
        let _ = respond(&mut out, 200, &body.to_string());
    }
}

fn watch(
    shared: &Shared,
    out: &mut TcpStream,
    node: Option<&str>,
    params: &BTreeMap<String, String>,
) {
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let deadline = Instant::now() + timeout;
    let mut st = shared.lock();
    if std::mem::take(&mut st.reject_watch_410) {
        drop(st);
        let _ = respond(out, 410, &status_body(410, "too old resource version"));
        return;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if from < st.oldest_valid_rv {
        drop(st);
        let _ = out.write_all(head.as_bytes());
        let _ = write_chunk(out, &gone_event(from));
        let _ = out.write_all(b"0\r\n\r\n");
        return;
    }
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    st.open_watches += 1;
    drop(st);
    stream_events(shared, out, node, from, deadline);
    shared.lock().open_watches -= 1;
}

/// Writes every change after `from` until the deadline, the end of the epoch, or a write error.
fn stream_events(
    shared: &Shared,
    out: &mut TcpStream,
    node: Option<&str>,
    from: u64,
    deadline: Instant,
) {
    let mut st = shared.lock();
    let epoch = st.epoch;
    let mut sent = from;
    loop {
        let pending: Vec<(u64, String)> = st
            .history
            .iter()
            .filter(|(rv, _, obj)| *rv > sent && node.is_none_or(|n| node_of(obj) == n))
            .map(|(rv, kind, obj)| (*rv, json!({"type": kind, "object": obj}).to_string()))
            .collect();
        if let Some((rv, _)) = pending.last() {
            sent = *rv;
        } else if let Some(&(rv, _, _)) = st.history.last() {
            // Other nodes' changes: nothing to send, but nothing to resend either.
            sent = sent.max(rv);
        }
        drop(st);
        for (_, event) in pending {
            if write_chunk(out, &event).is_err() {
                return;
            }
        }
        st = shared.lock();
        if shared.stop.load(Ordering::SeqCst) || st.epoch != epoch {
            if st.gone_epoch == Some(st.epoch) {
                drop(st);
                let _ = write_chunk(out, &gone_event(sent));
                let _ = out.write_all(b"0\r\n\r\n");
            }
            // Otherwise the connection is cut mid-stream: no final chunk.
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            drop(st);
            let _ = out.write_all(b"0\r\n\r\n");
            return;
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        st = shared
            .changed
            .wait_timeout(st, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn gone_event(rv: u64) -> String {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {rv}"),
            "reason": "Expired", "code": 410
        }
    })
    .to_string()
}

fn status_body(code: u16, message: &str) -> String {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": "InternalError", "code": code
    })
    .to_string()
}

fn respond(out: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn write_chunk(out: &mut TcpStream, event: &str) -> std::io::Result<()> {
    let line = format!("{event}\n");
    write!(out, "{:x}\r\n{line}\r\n", line.len())?;
    out.flush()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((hi, lo)), _) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pod as a test describes it; [`TestPod::to_pod`] makes the k8s-openapi object the fake
/// server serves.
#[derive(Clone, Debug)]
pub struct TestPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// The `traffic-capture/enabled` value, if any.
    pub annotation: Option<String>,
    /// `Guaranteed`, `Burstable` or `BestEffort`.
    pub qos: String,
    /// (name, `containerd://<id>`, running)
    pub containers: Vec<(String, String, bool)>,
    /// ReplicaSet name and `pod-template-hash`, for a Deployment's pod.
    pub replica_set: Option<(String, String)>,
}

impl TestPod {
    pub fn new(namespace: &str, name: &str, uid: &str, node: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            node: node.into(),
            annotation: None,
            qos: "Burstable".into(),
            containers: Vec::new(),
            replica_set: None,
        }
    }

    #[must_use]
    pub fn annotated(mut self, value: Option<&str>) -> Self {
        self.annotation = value.map(Into::into);
        self
    }

    #[must_use]
    pub fn qos(mut self, class: &str) -> Self {
        self.qos = class.into();
        self
    }

    /// A running container with this runtime id (`containerd://...`).
    #[must_use]
    pub fn container(mut self, name: &str, container_id: &str) -> Self {
        self.containers
            .push((name.into(), container_id.into(), true));
        self
    }

    /// Owned by the ReplicaSet `<deployment>-<hash>` of a Deployment.
    #[must_use]
    pub fn deployment(mut self, deployment: &str, hash: &str) -> Self {
        self.replica_set = Some((format!("{deployment}-{hash}"), hash.into()));
        self
    }

    pub fn to_pod(&self) -> Pod {
        let mut labels = BTreeMap::from([("app".to_string(), self.name.clone())]);
        let mut owner_references = None;
        if let Some((rs, hash)) = &self.replica_set {
            labels.insert("pod-template-hash".into(), hash.clone());
            owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: rs.clone(),
                uid: format!("{}-rs", self.uid),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        let annotations = self
            .annotation
            .as_ref()
            .map(|v| BTreeMap::from([("traffic-capture/enabled".to_string(), v.clone())]));
        let statuses = self
            .containers
            .iter()
            .map(|(name, id, running)| ContainerStatus {
                name: name.clone(),
                container_id: Some(id.clone()),
                image: "registry.example/app:1.0".into(),
                image_id: "registry.example/app@sha256:00".into(),
                ready: *running,
                restart_count: 0,
                started: Some(*running),
                state: Some(if *running {
                    ContainerState {
                        running: Some(ContainerStateRunning { started_at: None }),
                        ..ContainerState::default()
                    }
                } else {
                    ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 0,
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }
                }),
                ..ContainerStatus::default()
            })
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                uid: Some(self.uid.clone()),
                labels: Some(labels),
                annotations,
                owner_references,
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(self.node.clone()),
                containers: self
                    .containers
                    .iter()
                    .map(|(name, _, _)| Container {
                        name: name.clone(),
                        image: Some("registry.example/app:1.0".into()),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                qos_class: Some(self.qos.clone()),
                container_statuses: Some(statuses),
                ..PodStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(api: &FakeKubeApi, target: &str) -> BufReader<TcpStream> {
        let mut s = TcpStream::connect(api.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        BufReader::new(s)
    }

    /// Reads lines until one contains `needle`; returns it.
    fn line_with(r: &mut BufReader<TcpStream>, needle: &str) -> String {
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "EOF before {needle}");
            if line.contains(needle) {
                return line;
            }
        }
    }

    #[test]
    fn list_watch_and_gone() {
        let api = FakeKubeApi::start().unwrap();
        let pod = TestPod::new("ns", "p", "u-1", "n1").container("c", "containerd://ab");
        api.apply(&pod.to_pod()).unwrap();
        let mut r = get(&api, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1");
        let body = line_with(&mut r, "PodList");
        assert!(body.contains("\"resourceVersion\":\"1001\""), "{body}");
        let mut w = get(
            &api,
            "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion=1001",
        );
        line_with(&mut w, "Transfer-Encoding: chunked");
        assert!(api.wait_for(Duration::from_secs(5), |a| a.open_watches() == 1));
        api.apply(&pod.clone().annotated(Some("true")).to_pod())
            .unwrap();
        line_with(&mut w, "\"MODIFIED\"");
        api.expire_history();
        line_with(&mut w, "\"code\":410");
        assert!(api.wait_for(Duration::from_secs(5), |a| a.open_watches() == 0));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("spec.nodeName%3Dnode-1"),
            "spec.nodeName=node-1"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
