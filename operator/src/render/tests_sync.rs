//! SyncJob rendering: the `[[remote]]` and `[[sync_job]]` it adds to the config (and that the
//! server accepts), the Secret key mounted for it, and the binding refusals.

use std::path::Path;

use super::tests::{creds, inputs, meta, tenant};
use super::*;
use crate::crd::{SyncDirection, SyncJobSpec, SyncRemoteSpec, SyncSecretRef};

const FP: &str = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89";

fn job(name: &str, store: &str) -> SyncJob {
    SyncJob {
        metadata: meta(name),
        spec: SyncJobSpec {
            datastore: store.into(),
            remote: SyncRemoteSpec {
                host: "pbs-a.example.com".into(),
                port: 8007,
                auth_id: "sync@pbs!mirror".into(),
                fingerprint: FP.into(),
                secret_ref: SyncSecretRef {
                    name: "site-a".into(),
                    key: "token".into(),
                },
            },
            direction: SyncDirection::Pull,
            remote_store: "store1".into(),
            remote_namespace: Some("prod".into()),
            namespace: Some("mirror".into()),
            max_depth: Some(2),
            schedule: "hourly".into(),
            group_filter: vec!["type:vm".into(), "exclude:group:vm/999".into()],
            remove_vanished: true,
            transfer_last: Some(7),
            owner: Some("alice@pbs".into()),
            verified_only: true,
            encrypted_only: false,
            rate_in: Some("20 MiB".into()),
            rate_out: None,
            worker_threads: Some(4),
            disable: false,
        },
        status: None,
    }
}

fn with_jobs(jobs: Vec<SyncJob>) -> Inputs {
    let mut i = inputs();
    i.sync_secrets = jobs.iter().map(|j| j.name_any()).collect();
    i.sync_jobs = jobs;
    i
}

const EXPECTED_SYNC: &str = r#"
[[remote]]
name = "mirror-a-remote"
host = "pbs-a.example.com"
port = 8007
auth_id = "sync@pbs!mirror"
fingerprint = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"
secret_file = "/etc/pbs-cloud/sync/mirror-a/secret"

[[sync_job]]
id = "mirror-a"
store = "store1"
ns = "mirror"
remote = "mirror-a-remote"
remote_store = "store1"
remote_ns = "prod"
max_depth = 2
schedule = "hourly"
group_filter = ["type:vm", "exclude:group:vm/999"]
remove_vanished = true
transfer_last = 7
owner = "alice@pbs"
verified_only = true
rate_in = "20 MiB"
worker_threads = 4
"#;

#[test]
fn push_jobs_render_their_direction_and_upload_limit() {
    let t = tenant();
    let mut push = job("offsite", "store1");
    push.spec.direction = SyncDirection::Push;
    push.spec.rate_out = Some("10 MiB".into());
    let i = with_jobs(vec![push]);
    let bound = bind(&t, &i);
    assert!(bound.rejected.is_empty(), "{:?}", bound.rejected);
    let text = render_config(&t, &bound, &i, &creds());
    assert!(
        text.contains("id = \"offsite\"\ndirection = \"push\"\nstore = \"store1\""),
        "{text}"
    );
    assert!(text.contains("rate_out = \"10 MiB\""), "{text}");
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &text)
        .expect("server accepts the rendered config");
    let job = &parsed.sync_jobs[0];
    assert_eq!(
        job.direction.as_ref().map(|d| d.get_ref().as_str()),
        Some("push")
    );
}

#[test]
fn sync_job_renders_a_remote_and_a_job_the_server_accepts() {
    let t = tenant();
    let i = with_jobs(vec![job("mirror-a", "store1")]);
    let bound = bind(&t, &i);
    assert!(bound.rejected.is_empty(), "{:?}", bound.rejected);
    let text = render_config(&t, &bound, &i, &creds());
    let without = render_config(&t, &bind(&t, &inputs()), &inputs(), &creds());
    assert_eq!(text, format!("{without}{EXPECTED_SYNC}"));
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &text)
        .expect("server accepts the rendered config");
    assert_eq!(parsed.remotes.len(), 1);
    assert_eq!(parsed.remotes[0].name.get_ref(), "mirror-a-remote");
    assert_eq!(
        parsed.remotes[0].secret_file.get_ref(),
        Path::new("/etc/pbs-cloud/sync/mirror-a/secret")
    );
    let j = &parsed.sync_jobs[0];
    assert_eq!(j.id.get_ref(), "mirror-a");
    assert_eq!(j.remote.get_ref(), "mirror-a-remote");
    assert_eq!(j.worker_threads.as_ref().map(|w| *w.get_ref()), Some(4));
    assert!(j.remove_vanished && j.verified_only && !j.encrypted_only);
}

#[test]
fn minimal_sync_job_and_several_in_name_order_render_deterministically() {
    let t = tenant();
    let mut b = job("b-job", "store1");
    b.spec = SyncJobSpec {
        datastore: "store1".into(),
        remote: b.spec.remote.clone(),
        remote_store: "other".into(),
        schedule: "daily".into(),
        disable: true,
        ..SyncJobSpec::default()
    };
    let a = job("a-job", "store1");
    let one = with_jobs(vec![b.clone(), a.clone()]);
    let two = with_jobs(vec![a, b]);
    let text = render_config(&t, &bind(&t, &one), &one, &creds());
    assert_eq!(text, render_config(&t, &bind(&t, &two), &two, &creds()));
    let first = text.find("id = \"a-job\"").expect("a-job");
    let second = text.find("id = \"b-job\"").expect("b-job");
    assert!(first < second, "sorted by name");
    assert!(text.ends_with(
        "\n[[sync_job]]\nid = \"b-job\"\nstore = \"store1\"\nremote = \"b-job-remote\"\nremote_store = \"other\"\nschedule = \"daily\"\ndisable = true\n"
    ), "{text}");
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("c.toml"), &text)
        .expect("server accepts two remotes and two jobs");
    assert_eq!(parsed.remotes.len(), 2);
    assert_eq!(parsed.sync_jobs.len(), 2);
}

#[test]
fn sync_secret_is_mounted_read_only_with_mode_0400() {
    let t = tenant();
    let i = with_jobs(vec![job("mirror-a", "store1")]);
    let bound = bind(&t, &i);
    let d = deployment(&t, &bound, "img").expect("deployment");
    let v = serde_json::to_value(&d).expect("json");
    let pod = &v["spec"]["template"]["spec"];
    let sources = pod["volumes"][0]["projected"]["sources"]
        .as_array()
        .expect("sources");
    assert_eq!(
        sources.last(),
        Some(
            &serde_json::json!({"secret": {"name": "site-a", "optional": false, "items": [
                {"key": "token", "path": "sync/mirror-a/secret", "mode": 256}
            ]}})
        )
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0],
        serde_json::json!({"name": "config", "mountPath": "/etc/pbs-cloud", "readOnly": true})
    );
    // The file the config names is the one mounted.
    let text = render_config(&t, &bound, &i, &creds());
    assert!(text.contains(&format!(
        "secret_file = \"{CONFIG_DIR}/{}\"",
        sync_secret_path("mirror-a")
    )));
    // A refused job mounts nothing (a missing key would keep the pod from starting).
    let mut missing = i.clone();
    missing.sync_secrets.clear();
    let d = deployment(&t, &bind(&t, &missing), "img").expect("deployment");
    assert!(!serde_json::to_string(&d)
        .expect("json")
        .contains("sync/mirror-a"));
}

#[test]
fn sync_binding_refusals_have_reasons() {
    let t = tenant();
    let mut i = with_jobs(vec![
        job("ok", "store1"),
        job("no-secret", "store1"),
        job("no-store", "nokeys"),
        job("bad-schedule", "store1"),
        job("bad-filter", "store1"),
        job("zero-rate", "store1"),
        job("foreign", "foreign"),
    ]);
    i.sync_secrets.remove("no-secret");
    i.sync_jobs[3].spec.schedule = "every full moon".into();
    i.sync_jobs[4].spec.group_filter = vec!["regex:(".into()];
    i.sync_jobs[5].spec.rate_in = Some("0 KiB".into());
    // A datastore that is refused (no S3 keys) and one of another tenant.
    i.datastores.push(super::tests::s3_store("nokeys", true));
    i.datastores[1].spec.name = Some("nokeys".into());
    let mut foreign = super::tests::s3_store("foreign", true);
    foreign.spec.tenant = "other-tenant".into();
    i.datastores.push(foreign);
    let bound = bind(&t, &i);
    let names: Vec<String> = bound.sync_jobs.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, vec!["ok"]);
    let rejected: Vec<(&str, &str, &str)> = bound
        .rejected
        .iter()
        .filter(|r| r.kind == "SyncJob")
        .map(|r| (r.kind, r.name.as_str(), r.reason))
        .collect();
    assert_eq!(
        rejected,
        vec![
            ("SyncJob", "bad-filter", "InvalidSpec"),
            ("SyncJob", "bad-schedule", "InvalidSpec"),
            ("SyncJob", "no-secret", "SecretMissing"),
            ("SyncJob", "no-store", "DatastoreNotReady"),
            ("SyncJob", "zero-rate", "InvalidSpec"),
        ]
    );
    let message = |name: &str| {
        bound
            .rejected
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.message.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        message("no-secret"),
        "Secret 'site-a' with key 'token' not found"
    );
    assert!(message("bad-schedule").starts_with("schedule 'every full moon'"));
    assert!(message("bad-filter").starts_with("groupFilter 'regex:('"));
    assert!(message("zero-rate").contains("above zero"));
    // Only the bound job reaches the config, which the server accepts.
    let text = render_config(&t, &bound, &i, &creds());
    assert_eq!(text.matches("[[sync_job]]").count(), 1);
    pbs_cloud_server::config::Config::parse(Path::new("c.toml"), &text).expect("valid");
}
