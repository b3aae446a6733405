//! Backup manifests as the client would upload them to our server: the recorded manifest
//! with our checksums, blob sizes and key fingerprint, re-signed where it was signed.

use serde_json::{json, Value};

use super::load::BinarySummary;
use super::subst::{SnapRef, Vars};
use super::synth::Synth;
use super::ReplayError;

/// A manifest as the client would upload it here: our checksums and blob sizes, our key's
/// fingerprint, re-signed when it was signed. Server-added parts (`chunk_upload_stats`,
/// `notes`) are left out when `client_view`.
pub fn rewrite_manifest(
    vars: &mut Vars,
    synth: &Synth,
    snap: &SnapRef,
    recorded: &Value,
    client_view: bool,
) -> Result<Value, ReplayError> {
    let mut m = recorded.clone();
    if let Some(files) = m["files"].as_array_mut() {
        for f in files {
            let name = f["filename"].as_str().unwrap_or("").to_string();
            if let Some(c) = f["csum"].as_str() {
                f["csum"] = json!(vars.ours(c));
            }
            if name.ends_with(".blob") {
                if let Some(size) = vars.blob_sizes.get(&(snap.clone(), name)) {
                    f["size"] = json!(size);
                }
            }
        }
    }
    if let Some(u) = m["unprotected"].as_object_mut() {
        if client_view {
            u.remove("chunk_upload_stats");
            u.remove("notes");
        }
        if let Some(fp) = u
            .get("key-fingerprint")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            let ours = synth.key().fingerprint_hex();
            vars.learn(&fp, &ours);
            u.insert("key-fingerprint".into(), json!(ours));
        }
    }
    if let Some(sig) = m["signature"].as_str().map(str::to_string) {
        let ours = synth.sign_manifest(&m)?;
        vars.learn(&sig, &ours);
        m["signature"] = json!(ours);
    }
    Ok(m)
}

/// The manifest payload a binary summary carries.
pub(super) fn manifest_payload(b: &BinarySummary) -> Option<&Value> {
    b.decoded
        .as_ref()?
        .get("payload_json")
        .filter(|v| v.is_object())
}
