//! Deciding whether an owned object needs a server-side apply, from the cached live object:
//! the operator applies only when the object is missing, when what it renders changed since
//! its last apply (a digest of the rendered object is kept in an annotation, so removed
//! fields count as changes too), or when someone changed a field the operator sets (the live
//! object no longer contains the rendered one). At steady state nothing is written.

use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

/// Annotation with the digest of the rendered object the operator last applied.
pub const DIGEST_ANNOTATION: &str = "pbs.cloud/desired-digest";

/// SHA-256 (first 16 bytes, hex) of `obj`'s JSON.
fn digest<K: Serialize>(obj: &K) -> String {
    let json = serde_json::to_vec(obj).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    hex::encode(&d.as_ref()[..16])
}

/// Puts the digest of `desired` (as rendered, without the annotation) into its annotations.
pub fn stamp<K: Resource + Serialize>(mut desired: K) -> K {
    let d = digest(&desired);
    desired
        .annotations_mut()
        .insert(DIGEST_ANNOTATION.to_string(), d);
    desired
}

/// True when `desired` (stamped) must be applied over `live`.
pub fn needs_apply<K: Resource + Serialize>(desired: &K, live: Option<&K>) -> bool {
    let Some(live) = live else {
        return true;
    };
    if live.annotations().get(DIGEST_ANNOTATION) != desired.annotations().get(DIGEST_ANNOTATION) {
        return true;
    }
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(d), Ok(l)) => !covers(&l, &d),
        _ => true,
    }
}

/// Values the API server drops when they are set to them (Go's `omitempty`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// True when `live` holds every field of `desired` with the same value. Arrays must have the
/// same length and cover element by element (the server adds defaults inside elements, never
/// elements); quantities compare by value (`0.5` and `500m`), since the server canonicalizes
/// them.
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => covers(lv, dv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| covers(lv, dv))
        }
        (Value::String(d), Value::String(l)) => {
            d == l || matches!((quantity(d), quantity(l)), (Some(a), Some(b)) if a == b)
        }
        (Value::Number(d), Value::Number(l)) => d == l || d.as_f64() == l.as_f64(),
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

/// The value of a Kubernetes quantity (`1Gi`, `250m`, `1e3`), `None` when `s` is not one.
fn quantity(s: &str) -> Option<f64> {
    let end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(end);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    #[test]
    fn live_objects_with_server_defaults_cover_the_rendered_one() {
        let desired = json!({
            "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"replicas": 1, "paused": false, "args": [],
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}]}
        });
        let live = json!({
            "metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u", "resourceVersion": "7"},
            "spec": {"replicas": 1, "progressDeadlineSeconds": 600,
                     "containers": [{"name": "c", "terminationMessagePath": "/dev/termination-log",
                                     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
            "status": {"readyReplicas": 1}
        });
        assert!(covers(&live, &desired));
        let mut changed = live.clone();
        changed["spec"]["replicas"] = json!(3);
        assert!(!covers(&changed, &desired), "someone scaled it");
        let mut extra = live.clone();
        extra["spec"]["containers"]
            .as_array_mut()
            .expect("array")
            .push(json!({"name": "sidecar"}));
        assert!(!covers(&extra, &desired), "arrays must match in length");
        let mut label = live;
        label["metadata"]["labels"]["x"] = json!("2");
        assert!(!covers(&label, &desired));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert_eq!(quantity("250m"), Some(0.25));
        assert_eq!(quantity("1Gi"), quantity("1024Mi"));
        assert_eq!(quantity("1e3"), quantity("1k"));
        assert_eq!(quantity("TCP"), None);
        assert_eq!(quantity("1x"), None);
    }

    #[test]
    fn the_digest_catches_removed_fields() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("c".into());
        cm.data = Some(
            [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ]
            .into(),
        );
        let applied = stamp(cm.clone());
        assert!(needs_apply(&applied, None), "missing objects are applied");
        assert!(!needs_apply(&applied, Some(&applied)));
        let mut fewer = cm;
        fewer.data = Some([("a".to_string(), "1".to_string())].into());
        let fewer = stamp(fewer);
        assert!(
            needs_apply(&fewer, Some(&applied)),
            "the live object still covers it, but the digest changed"
        );
    }
}
