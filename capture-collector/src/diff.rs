//! Smart Diff over stored traffic: the `capture-diff` engine run on an organisation's
//! exchanges, selected by routing key, workload, namespace and time, with the organisation's
//! noise model kept in its model store.
//!
//! The same operation serves `capture-collector diff --data|--store` (local) and the `Diff`
//! RPC (`--collector`, remote): the organisation comes from `--org` or from the caller's
//! token, and models are stored and read under it only (`diff-noise.<model>`, sealed with the
//! organisation's key by the store). A `noise` selection is the same traffic seen again on the
//! baseline (A/A): learned against the baseline, merged into the stored model, saved, then
//! used; without one, the stored model is used as it is (an empty one when none is stored).

use std::{str::FromStr, time::SystemTime};

use capture_diff::{DiffOptions, NoiseModel, Report};
use capture_model::{har_read::ReadEntry, wire};
use capture_proto::v1 as pb;

use crate::{
    org::OrgName,
    storage::{Selection, Storage, StorageError},
};

/// Exchanges one selection may hold by default (`--max-diff-exchanges`).
pub const DEFAULT_MAX_EXCHANGES: usize = 100_000;

/// A selector as written on the command line: `key=value` pairs separated by commas, keys
/// `routing-key`, `workload`, `namespace`, `since`, `until` (RFC 3339 times), every one given
/// must match; e.g. `routing-key=v2,since=2026-12-06T10:00:00Z`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(pub Selection);

#[derive(Debug, thiserror::Error)]
#[error("{0:?}: {1} (give key=value pairs: routing-key, workload, namespace, since, until)")]
pub struct BadSelector(String, String);

fn unix_nanos(text: &str) -> Result<u64, String> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| format!("{text:?}: {e}"))?;
    let nanos = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?
        .as_nanos();
    u64::try_from(nanos).map_err(|_| format!("{text:?} is too far away"))
}

impl FromStr for Selector {
    type Err = BadSelector;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| BadSelector(s.chars().take(200).collect(), why);
        let mut selection = Selection::default();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() || value.len() > 253 {
                return Err(bad(format!("{key}: 1 to 253 characters")));
            }
            match key {
                "routing-key" => selection.routing_key = Some(value.to_owned()),
                "workload" => selection.workload = Some(value.to_owned()),
                "namespace" => selection.namespace = Some(value.to_owned()),
                "since" => selection.since_ns = Some(unix_nanos(value).map_err(bad)?),
                "until" => selection.until_ns = Some(unix_nanos(value).map_err(bad)?),
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        if selection == Selection::default() {
            return Err(bad("selects everything; name at least one key".into()));
        }
        Ok(Self(selection))
    }
}

impl Selector {
    pub fn to_proto(&self) -> pb::Selector {
        let s = &self.0;
        pb::Selector {
            routing_key: s.routing_key.clone().unwrap_or_default(),
            workload: s.workload.clone().unwrap_or_default(),
            namespace: s.namespace.clone().unwrap_or_default(),
            since_unix_nanos: s.since_ns.unwrap_or_default(),
            until_unix_nanos: s.until_ns.unwrap_or_default(),
        }
    }

    /// From the wire; an all-empty selector is refused (it would select everything).
    pub fn from_proto(p: &pb::Selector) -> Result<Self, String> {
        let text = |v: &str, name: &str| -> Result<Option<String>, String> {
            if v.len() > 253 {
                return Err(format!("{name} is longer than 253 bytes"));
            }
            Ok(Some(v.to_owned()).filter(|v| !v.is_empty()))
        };
        let selection = Selection {
            routing_key: text(&p.routing_key, "routing_key")?,
            workload: text(&p.workload, "workload")?,
            namespace: text(&p.namespace, "namespace")?,
            since_ns: Some(p.since_unix_nanos).filter(|&v| v != 0),
            until_ns: Some(p.until_unix_nanos).filter(|&v| v != 0),
        };
        if selection == Selection::default() {
            return Err("a selector must name at least one of routing_key, workload, namespace, since, until".into());
        }
        Ok(Self(selection))
    }
}

/// One diff to run.
#[derive(Clone, Debug)]
pub struct DiffRequest {
    pub baseline: Selector,
    pub candidate: Selector,
    pub noise: Vec<Selector>,
    /// The model's name; stored as `diff-noise.<model>`.
    pub model: String,
    /// Most exchanges one selection may hold.
    pub max_exchanges: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The request cannot be run as given (exit 2, `INVALID_ARGUMENT`).
    #[error("{0}")]
    BadRequest(String),
    /// A selection holds more than `--max-diff-exchanges` (`RESOURCE_EXHAUSTED`).
    #[error(
        "the {side} selection holds more than {max} exchanges (--max-diff-exchanges): narrow it"
    )]
    TooLarge { side: &'static str, max: usize },
    #[error(transparent)]
    Storage(StorageError),
    #[error("the stored noise model {name} does not read: {reason}")]
    Model { name: String, reason: String },
}

impl From<StorageError> for DiffError {
    fn from(e: StorageError) -> Self {
        if e.is_config() {
            Self::BadRequest(e.to_string())
        } else {
            Self::Storage(e)
        }
    }
}

/// The model-store name of model `model`.
pub fn model_name(model: &str) -> String {
    format!(
        "diff-noise.{}",
        if model.is_empty() { "default" } else { model }
    )
}

async fn collect(
    storage: &Storage,
    org: &OrgName,
    selector: &Selector,
    side: &'static str,
    max: usize,
) -> Result<Vec<ReadEntry>, DiffError> {
    let mut entries = Vec::new();
    let mut too_large = false;
    let read = storage
        .read(org, &selector.0, &mut |stored| {
            if entries.len() >= max {
                too_large = true;
                return Err(StorageError::Io("selection limit".into()));
            }
            // Stored exchanges were checked when they were pushed; one this version cannot
            // read back is left out, as export does.
            if let Ok(exchange) = wire::from_proto(stored.exchange) {
                entries.push(ReadEntry {
                    exchange,
                    replay: None,
                    line: entries.len() + 1,
                });
            }
            Ok(())
        })
        .await;
    if too_large {
        return Err(DiffError::TooLarge { side, max });
    }
    read?;
    Ok(entries)
}

/// Runs `request` over `org`'s stored traffic.
pub async fn run(
    storage: &Storage,
    org: &OrgName,
    request: &DiffRequest,
    options: &DiffOptions,
) -> Result<Report, DiffError> {
    let name = model_name(&request.model);
    crate::storage::check_model_name(&name)
        .map_err(|e| DiffError::BadRequest(format!("model: {e}")))?;
    let max = request.max_exchanges;
    let baseline = collect(storage, org, &request.baseline, "baseline", max).await?;
    let candidate = collect(storage, org, &request.candidate, "candidate", max).await?;
    let mut model = match storage.get_model(org, &name).await? {
        Some(bytes) => {
            serde_json::from_slice::<NoiseModel>(&bytes).map_err(|e| DiffError::Model {
                name: name.clone(),
                reason: e.to_string(),
            })?
        }
        None => NoiseModel::new(),
    };
    if !request.noise.is_empty() {
        for selector in &request.noise {
            let again = collect(storage, org, selector, "noise", max).await?;
            model.merge(&NoiseModel::learn_with(&baseline, &again, options));
        }
        let bytes = serde_json::to_vec(&model).map_err(|e| DiffError::Model {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        storage.put_model(org, &name, &bytes).await?;
    }
    Ok(capture_diff::diff(&baseline, &candidate, &model, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_round_trip() {
        let s: Selector = "routing-key=v2, workload=checkout,since=2026-12-06T10:00:00Z"
            .parse()
            .unwrap();
        assert_eq!(s.0.routing_key.as_deref(), Some("v2"));
        assert_eq!(s.0.workload.as_deref(), Some("checkout"));
        assert_eq!(s.0.since_ns, Some(1_796_551_200_000_000_000));
        assert_eq!(Selector::from_proto(&s.to_proto()).unwrap(), s);
        for bad in [
            "",
            "routing-key",
            "colour=red",
            "since=yesterday",
            "workload=",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
        assert!(Selector::from_proto(&pb::Selector::default()).is_err());
        assert_eq!(model_name(""), "diff-noise.default");
    }
}
