//! `GET /status/datastore-usage`: one item per datastore the caller may audit or back up to
//! (within its tenant), with PBS's keys. PBS fills `history` from its round-robin database
//! (30 days, one value per 30 minutes); this server keeps no such history, so every slot is
//! `null` except the newest, which holds the current used/total ratio.

use std::time::{SystemTime, UNIX_EPOCH};

use http::Response;
use serde_json::{json, Value};

use super::context::{ds_error, Ctx};
use crate::net::{json_data, Body, HttpError};

/// Spacing of the history slots (seconds) and their number (30 days).
const HISTORY_DELTA: i64 = 1800;
const HISTORY_SLOTS: usize = 1440;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The history array: empty slots, and the current fill level in the newest one.
fn history(used: u64, total: u64) -> Vec<Value> {
    let mut slots = vec![Value::Null; HISTORY_SLOTS];
    if total > 0 {
        slots[HISTORY_SLOTS - 1] = json!(used as f64 / total as f64);
    }
    slots
}

pub async fn datastore_usage(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let now = now();
    let mut items = Vec::new();
    for entry in ctx.state.datastores() {
        if !ctx.store_scope(&entry).capacity() {
            continue;
        }
        let store = &entry.store;
        // the same figures as the datastore's own status (see datastore/usage/capacity.rs)
        let cap = store.usage().status_capacity().await.map_err(ds_error)?;
        let (total, used, avail) = (cap.total, cap.used, cap.avail);
        let mut item = json!({
            "store": entry.name,
            "total": total,
            "used": used,
            "avail": avail,
            "history": history(used, total),
            "history-start": now - HISTORY_DELTA * HISTORY_SLOTS as i64,
            "history-delta": HISTORY_DELTA,
            "mount-status": "nonremovable",
            "backend-type": store.backend_kind(),
        });
        if let Some(gc) = store.gc().last_status().await {
            item["gc-status"] = gc.pbs_json();
        }
        items.push(item);
    }
    Ok(json_data(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_holds_only_the_current_ratio() {
        let h = history(25, 100);
        assert_eq!(h.len(), HISTORY_SLOTS);
        assert_eq!(h.last().unwrap(), &json!(0.25));
        assert!(h[..HISTORY_SLOTS - 1].iter().all(Value::is_null));
        assert!(history(1, 0).iter().all(Value::is_null));
    }
}
