//! Rendered manifests checked against the Kubernetes API types of k8s-openapi, strictly:
//! k8s-openapi ignores unknown fields when it deserialises, so each object is deserialised,
//! serialised again and compared with what was rendered. A misspelt or misplaced field is
//! then a difference, not something the API server would silently drop.

use anyhow::{Context, Result, bail};
use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// One rendered object, typed.
#[derive(Debug, Clone)]
pub enum Object {
    DaemonSet(Box<DaemonSet>),
    Deployment(Box<Deployment>),
    Job(Box<Job>),
    ConfigMap(Box<ConfigMap>),
    Namespace(Box<Namespace>),
    Secret(Box<Secret>),
    Service(Box<Service>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    /// `monitoring.coreos.com/v1` ServiceMonitor: not in k8s-openapi, kept as JSON for
    /// structural checks.
    ServiceMonitor(Value),
}

impl Object {
    /// `apiVersion` and `kind` of a rendered document.
    pub fn type_of(doc: &Value) -> Result<(&str, &str)> {
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .context("document without apiVersion")?;
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .context("document without kind")?;
        Ok((api_version, kind))
    }

    /// Types `doc` strictly (see the module documentation); an unknown kind is an error.
    pub fn parse(doc: &Value) -> Result<Self> {
        let (api_version, kind) = Self::type_of(doc)?;
        let object = match (api_version, kind) {
            (DaemonSet::API_VERSION, DaemonSet::KIND) => Self::DaemonSet(strict(doc)?),
            (Deployment::API_VERSION, Deployment::KIND) => Self::Deployment(strict(doc)?),
            (Job::API_VERSION, Job::KIND) => Self::Job(strict(doc)?),
            (ConfigMap::API_VERSION, ConfigMap::KIND) => Self::ConfigMap(strict(doc)?),
            (Namespace::API_VERSION, Namespace::KIND) => Self::Namespace(strict(doc)?),
            (Secret::API_VERSION, Secret::KIND) => Self::Secret(strict(doc)?),
            (Service::API_VERSION, Service::KIND) => Self::Service(strict(doc)?),
            (ServiceAccount::API_VERSION, ServiceAccount::KIND) => {
                Self::ServiceAccount(strict(doc)?)
            }
            (ClusterRole::API_VERSION, ClusterRole::KIND) => Self::ClusterRole(strict(doc)?),
            (ClusterRoleBinding::API_VERSION, ClusterRoleBinding::KIND) => {
                Self::ClusterRoleBinding(strict(doc)?)
            }
            (PodDisruptionBudget::API_VERSION, PodDisruptionBudget::KIND) => {
                Self::PodDisruptionBudget(strict(doc)?)
            }
            ("monitoring.coreos.com/v1", "ServiceMonitor") => Self::ServiceMonitor(doc.clone()),
            (api_version, kind) => bail!("unexpected object {api_version} {kind}"),
        };
        Ok(object)
    }

    /// `kind/name` for messages.
    pub fn describe(doc: &Value) -> String {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        format!("{kind}/{name}")
    }
}

/// Deserialises `doc` into `T` and fails unless serialising it again gives `doc` back (after
/// dropping `null` members, which mean "unset" in both).
pub fn strict<T>(doc: &Value) -> Result<Box<T>>
where
    T: DeserializeOwned + Serialize,
{
    let what = Object::describe(doc);
    let typed: T = serde_json::from_value(doc.clone())
        .with_context(|| format!("{what} does not deserialise"))?;
    let back = serde_json::to_value(&typed)?;
    let mut differences = Vec::new();
    diff(
        "",
        &without_nulls(doc),
        &without_nulls(&back),
        &mut differences,
    );
    if !differences.is_empty() {
        bail!(
            "{what} has fields its API type does not know or reads differently:\n  {}",
            differences.join("\n  ")
        );
    }
    Ok(Box::new(typed))
}

/// `value` with every `null` object member removed, recursively.
pub fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// JSON pointers where `rendered` and `typed` differ.
fn diff(path: &str, rendered: &Value, typed: &Value, out: &mut Vec<String>) {
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}/{key}");
                match b.get(key) {
                    Some(other) => diff(&here, value, other, out),
                    None => out.push(format!("{here}: unknown field (value {value})")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}/{key}: added by the type"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}/{i}"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: rendered {a}, typed {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_map(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": data})
    }

    #[test]
    fn a_well_formed_object_types() {
        let doc = config_map(json!({"a": "b"}));
        assert!(matches!(Object::parse(&doc), Ok(Object::ConfigMap(_))));
    }

    #[test]
    fn a_misspelt_field_is_caught() {
        let mut doc = config_map(json!({"a": "b"}));
        doc["metadata"]["lables"] = json!({"x": "y"});
        let err = Object::parse(&doc).unwrap_err().to_string();
        assert!(err.contains("/metadata/lables: unknown field"), "{err}");
    }

    #[test]
    fn a_misplaced_field_is_caught() {
        let doc = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 80, "containerPort": 80}]}
        });
        let err = Object::parse(&doc).unwrap_err().to_string();
        assert!(err.contains("/spec/ports/0/containerPort"), "{err}");
    }

    #[test]
    fn a_wrong_type_does_not_deserialise() {
        let doc = config_map(json!({"a": 1}));
        assert!(Object::parse(&doc).is_err());
    }

    #[test]
    fn nulls_mean_unset() {
        let doc = config_map(json!({"a": "b"}));
        let mut with_null = doc.clone();
        with_null["metadata"]["labels"] = Value::Null;
        assert!(Object::parse(&with_null).is_ok());
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
        assert!(Object::parse(&doc).is_err());
    }
}
