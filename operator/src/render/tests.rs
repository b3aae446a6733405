//! Exact-output tests of the pure rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kube::api::ObjectMeta;

use super::*;
use crate::crd::{
    DatastoreSpec, DeletionPolicy, IngressSpec, KeepSpec, LockMode, PrunePolicySpec,
    RetentionLockSpec, S3Spec, SecretKeyRef, StorageSpec, TenantSpec,
};

pub(super) fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team-a".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectMeta::default()
    }
}

pub(crate) fn tenant() -> Tenant {
    Tenant {
        metadata: meta("acme"),
        spec: TenantSpec::default(),
        status: None,
    }
}

pub(super) fn s3_store(name: &str, object_lock: bool) -> Datastore {
    Datastore {
        metadata: meta(name),
        spec: DatastoreSpec {
            tenant: "acme".into(),
            gc_schedule: Some("daily".into()),
            s3: Some(S3Spec {
                bucket: "backups".into(),
                endpoint: Some("http://rgw.storage:7480".into()),
                path_style: true,
                credentials_secret: Some(SecretKeyRef {
                    name: "s3-keys".into(),
                    access_key_id_key: "access-key-id".into(),
                    secret_access_key_key: "secret-access-key".into(),
                }),
                object_lock,
                ..S3Spec::default()
            }),
            ..DatastoreSpec::default()
        },
        status: None,
    }
}

fn prune(name: &str, store: &str, daily: u64) -> PrunePolicy {
    PrunePolicy {
        metadata: meta(name),
        spec: PrunePolicySpec {
            datastore: store.into(),
            schedule: "*-*-* 02:00".into(),
            group_filter: vec!["type:vm".into()],
            keep: KeepSpec {
                last: Some(3),
                daily: Some(daily),
                ..KeepSpec::default()
            },
            ..PrunePolicySpec::default()
        },
        status: None,
    }
}

fn lock(name: &str, store: &str) -> RetentionLock {
    RetentionLock {
        metadata: meta(name),
        spec: RetentionLockSpec {
            datastore: store.into(),
            mode: LockMode::Compliance,
            days: 30,
            ..RetentionLockSpec::default()
        },
        status: None,
    }
}

pub(super) fn creds() -> Credentials {
    Credentials {
        password: "pw".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        token_name: "operator".into(),
        token_secret: "tok".into(),
        token_secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$dG9r".into(),
    }
}

pub(super) fn inputs() -> Inputs {
    Inputs {
        datastores: vec![s3_store("store1", true)],
        prune_policies: vec![prune("nightly", "store1", 7)],
        retention_locks: vec![lock("worm", "store1")],
        sync_jobs: vec![],
        sync_secrets: BTreeSet::new(),
        access_key_ids: BTreeMap::from([("store1".to_string(), "AKIA1".to_string())]),
        prefix_conflicts: BTreeMap::new(),
    }
}

const EXPECTED_CONFIG: &str = r#"# Rendered by pbs-cloud-operator for Tenant team-a/acme; edits are overwritten.
listen = "0.0.0.0:8007"
data_dir = "/var/lib/pbs-cloud"

[tls]
cert = "/etc/pbs-cloud/tls/tls.crt"
key = "/etc/pbs-cloud/tls/tls.key"

[[tenant]]
id = "acme"

[[datastore]]
name = "store1"
tenant = "acme"
gc_schedule = "daily"
[datastore.s3]
bucket = "backups"
prefix = "team-a/acme/store1"
endpoint = "http://rgw.storage:7480"
path_style = true
access_key_id = "AKIA1"
secret_access_key_file = "/etc/pbs-cloud/s3/store1/secret-access-key"

[[user]]
userid = "admin@pbs"
tenant = "acme"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA"

[[token]]
tokenid = "admin@pbs!operator"
secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$dG9r"

[[acl]]
path = "/"
authid = "admin@pbs"
role = "Admin"

[[acl]]
path = "/"
authid = "admin@pbs!operator"
role = "Admin"

[[prune_job]]
id = "nightly"
store = "store1"
schedule = "*-*-* 02:00"
group_filter = ["type:vm"]
keep_last = 3
keep_daily = 7

[[retention_lock]]
id = "worm"
store = "store1"
mode = "compliance"
days = 30
"#;

#[test]
fn config_renders_exactly_and_the_server_accepts_it() {
    let t = tenant();
    let inputs = inputs();
    let bound = bind(&t, &inputs);
    assert!(bound.rejected.is_empty(), "{:?}", bound.rejected);
    let text = render_config(&t, &bound, &inputs, &creds());
    assert_eq!(text, EXPECTED_CONFIG);
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &text)
        .expect("server accepts the rendered config");
    assert_eq!(parsed.datastores.len(), 1);
    assert_eq!(parsed.prune_jobs[0].keep_daily, Some(7));
    assert_eq!(parsed.retention_locks[0].mode.get_ref(), "compliance");
}

#[test]
fn real_hashes_and_awkward_strings_still_parse() {
    let mut t = tenant();
    t.spec.tenant_id = Some("acme.prod".into());
    let mut inputs = inputs();
    inputs.datastores[0].spec.comment = Some("quote \" backslash \\ newline \n tab \t".into());
    inputs.prune_policies[0].spec.ns = Some("a/b".into());
    inputs.prune_policies[0].spec.max_depth = Some(2);
    inputs.prune_policies[0].spec.disable = true;
    inputs.retention_locks[0].spec.groups = vec!["vm/100".into()];
    inputs.retention_locks[0].spec.legal_hold = true;
    let creds = Credentials::generate("acme").expect("credentials");
    let bound = bind(&t, &inputs);
    let text = render_config(&t, &bound, &inputs, &creds);
    let parsed =
        pbs_cloud_server::config::Config::parse(Path::new("c.toml"), &text).expect("valid config");
    assert_eq!(
        parsed.datastores[0].comment.as_deref(),
        Some("quote \" backslash \\ newline \n tab \t")
    );
    assert_eq!(parsed.tenants[0].id.get_ref(), "acme.prod");
    assert!(parsed.retention_locks[0].legal_hold);
    assert!(pbs_cloud_server::auth::password::verify_password(
        &creds.password,
        parsed.users[0].password_hash.as_deref().unwrap_or_default()
    ));
}

#[test]
fn editing_a_prune_policy_changes_the_config() {
    let t = tenant();
    let a = inputs();
    let mut b = inputs();
    b.prune_policies[0].spec.keep.daily = Some(14);
    let ca = render_config(&t, &bind(&t, &a), &a, &creds());
    let cb = render_config(&t, &bind(&t, &b), &b, &creds());
    assert!(ca.contains("keep_daily = 7\n"));
    assert!(cb.contains("keep_daily = 14\n"));
    assert_eq!(ca.replace("keep_daily = 7", "keep_daily = 14"), cb);
}

#[test]
fn binding_rules_reject_with_reasons() {
    let t = tenant();
    let mut inputs = inputs();
    inputs.datastores.push(s3_store("nolock", false));
    inputs.datastores[1].spec.name = Some("other".into());
    inputs.retention_locks.push(lock("lock2", "nolock"));
    inputs.datastores.push(s3_store("zdup", true));
    inputs.datastores[2].spec.name = Some("store1".into());
    inputs.datastores.push(s3_store("nokeys", true));
    inputs.datastores[3].spec.name = Some("nokeys".into());
    let mut foreign = s3_store("foreign", true);
    foreign.spec.tenant = "other-tenant".into();
    inputs.datastores.push(foreign);
    inputs.prune_policies.push(prune("p-foreign", "foreign", 1));
    inputs.prune_policies.push(prune("p-missing", "nokeys", 1));
    inputs.access_key_ids.insert("nolock".into(), "K".into());
    inputs.access_key_ids.insert("zdup".into(), "K".into());
    inputs.datastores.push(s3_store("overlap", true));
    inputs.datastores[5].spec.name = Some("overlap".into());
    inputs.access_key_ids.insert("overlap".into(), "K".into());
    inputs
        .prefix_conflicts
        .insert("overlap".into(), "S3 prefix lies inside".into());
    let bound = bind(&t, &inputs);
    let names: Vec<String> = bound.datastores.iter().map(|d| d.name_any()).collect();
    assert_eq!(names, vec!["nolock", "store1"]);
    let rejected: Vec<(&str, &str, &str)> = bound
        .rejected
        .iter()
        .map(|r| (r.kind, r.name.as_str(), r.reason))
        .collect();
    assert_eq!(
        rejected,
        vec![
            ("Datastore", "nokeys", "CredentialsMissing"),
            ("Datastore", "overlap", "PrefixOverlap"),
            ("Datastore", "zdup", "DuplicateName"),
            ("PrunePolicy", "p-missing", "DatastoreNotReady"),
            ("RetentionLock", "lock2", "ObjectLockMissing"),
        ]
    );
    // "zdup" sorts after "store1", so it is the one that loses the name.
    assert_eq!(bound.rejected[1].message, "S3 prefix lies inside");
    assert!(bound.rejected[2].message.contains("store1"));
    assert_eq!(bound.prune_policies.len(), 1);
    assert_eq!(bound.retention_locks.len(), 1);
}

#[test]
fn deployment_is_hardened_and_exact() {
    let t = tenant();
    let inputs = inputs();
    let bound = bind(&t, &inputs);
    let d = deployment(&t, &bound, "img:1").expect("deployment");
    let v = serde_json::to_value(&d).expect("json");
    let expected = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "acme-pbs", "namespace": "team-a",
            "labels": {
                "app.kubernetes.io/instance": "acme",
                "app.kubernetes.io/managed-by": "pbs-cloud-operator",
                "app.kubernetes.io/name": "pbs-cloud-server",
                "pbs.cloud/tenant": "acme"
            },
            "ownerReferences": [{
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant", "name": "acme",
                "uid": "uid-acme", "controller": true
            }]
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {
                "app.kubernetes.io/instance": "acme",
                "app.kubernetes.io/name": "pbs-cloud-server",
                "pbs.cloud/tenant": "acme"
            }},
            "template": {
                "metadata": {"labels": {
                    "app.kubernetes.io/instance": "acme",
                    "app.kubernetes.io/managed-by": "pbs-cloud-operator",
                    "app.kubernetes.io/name": "pbs-cloud-server",
                    "pbs.cloud/tenant": "acme"
                }},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {
                        "fsGroup": 65532, "runAsGroup": 65532, "runAsNonRoot": true,
                        "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "server",
                        "image": "img:1",
                        "args": ["serve", "--config", "/etc/pbs-cloud/config.toml",
                                 "--data-dir", "/var/lib/pbs-cloud"],
                        "ports": [{"name": "https", "containerPort": 8007, "protocol": "TCP"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
                            "initialDelaySeconds": 2, "periodSeconds": 10,
                            "timeoutSeconds": 5, "failureThreshold": 3
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
                            "initialDelaySeconds": 10, "periodSeconds": 20,
                            "timeoutSeconds": 5, "failureThreshold": 6
                        },
                        "resources": {
                            "limits": {"memory": "1Gi"},
                            "requests": {"cpu": "250m", "memory": "256Mi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/pbs-cloud", "readOnly": true},
                            {"name": "data", "mountPath": "/var/lib/pbs-cloud"},
                            {"name": "tmp", "mountPath": "/tmp"}
                        ]
                    }],
                    "volumes": [
                        {"name": "config", "projected": {"defaultMode": 288, "sources": [
                            {"secret": {"name": "acme-pbs-config", "optional": false,
                                "items": [{"key": "config.toml", "path": "config.toml"}]}},
                            {"secret": {"name": "acme-pbs-tls", "optional": false, "items": [
                                {"key": "tls.crt", "path": "tls/tls.crt"},
                                {"key": "tls.key", "path": "tls/tls.key"}]}},
                            {"secret": {"name": "s3-keys", "optional": false, "items": [
                                {"key": "secret-access-key",
                                 "path": "s3/store1/secret-access-key"}]}}
                        ]}},
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}}
                    ]
                }
            }
        }
    });
    assert_eq!(
        v,
        expected,
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
}

#[test]
fn storage_pvc_follows_deletion_policy() {
    let mut t = tenant();
    t.spec.storage = Some(StorageSpec {
        size: "20Gi".into(),
        storage_class_name: None,
    });
    let pvc = data_pvc(&t).expect("pvc").expect("some");
    assert_eq!(pvc.metadata.owner_references, None, "Retain keeps the PVC");
    t.spec.deletion_policy = DeletionPolicy::Delete;
    let pvc = data_pvc(&t).expect("pvc").expect("some");
    assert_eq!(pvc.metadata.owner_references.map(|o| o.len()), Some(1));
    let d = deployment(&t, &Bound::default(), "img").expect("deployment");
    let v = serde_json::to_value(&d).expect("json");
    assert_eq!(
        v["spec"]["template"]["spec"]["volumes"][1],
        serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": "acme-pbs-data"}})
    );
    assert!(data_pvc(&tenant()).expect("ok").is_none());
}

#[test]
fn service_and_ingress() {
    let mut t = tenant();
    let svc = serde_json::to_value(service(&t).expect("svc")).expect("json");
    assert_eq!(
        svc["spec"],
        serde_json::json!({
            "type": "ClusterIP",
            "ports": [{"name": "https", "port": 8007, "targetPort": "https", "protocol": "TCP"}],
            "selector": {
                "app.kubernetes.io/instance": "acme",
                "app.kubernetes.io/name": "pbs-cloud-server",
                "pbs.cloud/tenant": "acme"
            }
        })
    );
    assert!(ingress(&t).expect("ok").is_none());
    assert_eq!(endpoint(&t), "acme-pbs.team-a.svc:8007");
    assert_eq!(
        repository(&t, "store1"),
        "admin@pbs@acme-pbs.team-a.svc:8007:store1"
    );
    t.spec.ingress = Some(IngressSpec {
        host: "acme.backup.example.com".into(),
        class_name: Some("nginx".into()),
        annotations: BTreeMap::new(),
    });
    let ing = serde_json::to_value(ingress(&t).expect("ok").expect("some")).expect("json");
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"],
        "true"
    );
    assert_eq!(
        ing["spec"]["rules"][0],
        serde_json::json!({"host": "acme.backup.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "acme-pbs", "port": {"name": "https"}}}
        }]}})
    );
    assert_eq!(endpoint(&t), "acme.backup.example.com:443");
    assert!(dns_names(&t).contains(&"acme.backup.example.com".to_string()));
}

#[test]
fn secrets_round_trip_and_fingerprint() {
    let t = tenant();
    let c = Credentials::generate("acme").expect("creds");
    let s = credentials_secret(&t, &c).expect("secret");
    assert_eq!(Credentials::from_secret(&s), Some(c.clone()));
    let data = s.data.as_ref().expect("data");
    assert_eq!(data["tokenid"].0, b"admin@pbs!operator");
    let tls = generate_self_signed(&t).expect("cert");
    let sec = tls_secret(&t, &tls).expect("tls secret");
    assert_eq!(sec.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(TlsMaterial::from_secret(&sec), Some(tls.clone()));
    let fp = fingerprint(&t, &tls.cert_pem).expect("fingerprint");
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert!(fp.split(':').all(|b| b.len() == 2));
    assert!(fingerprint(&t, "not a pem").is_err());
    let cfg = config_secret(&t, "x = 1\n").expect("config secret");
    assert_eq!(cfg.metadata.name.as_deref(), Some("acme-pbs-config"));
    assert_eq!(cfg.data.expect("data")["config.toml"].0, b"x = 1\n");
}

#[test]
fn cert_manager_certificate_when_asked() {
    let mut t = tenant();
    assert!(certificate(&t).expect("ok").is_none());
    t.spec.tls = Some(crate::crd::TlsSpec {
        secret_name: None,
        cert_manager: Some(crate::crd::CertManagerSpec {
            issuer_name: "letsencrypt".into(),
            issuer_kind: "ClusterIssuer".into(),
            dns_names: vec![],
        }),
    });
    let c = certificate(&t).expect("ok").expect("some");
    let v = serde_json::to_value(&c).expect("json");
    assert_eq!(v["apiVersion"], "cert-manager.io/v1");
    assert_eq!(v["kind"], "Certificate");
    assert_eq!(v["spec"]["secretName"], "acme-pbs-tls");
    assert_eq!(v["spec"]["issuerRef"]["kind"], "ClusterIssuer");
}

#[test]
fn unowned_tenant_is_an_error() {
    let mut t = tenant();
    t.metadata.uid = None;
    assert!(matches!(service(&t), Err(RenderError::NoUid(_))));
}

#[test]
fn weakened_lock_keeps_the_accepted_spec() {
    let t = tenant();
    let mut inputs = inputs();
    let accepted = inputs.retention_locks[0].spec.clone();
    inputs.retention_locks[0].metadata.annotations = Some(BTreeMap::from([(
        ACCEPTED_ANNOTATION.to_string(),
        serde_json::to_string(&accepted).expect("json"),
    )]));
    inputs.retention_locks[0].spec.days = 10;
    inputs.retention_locks[0].spec.mode = LockMode::Governance;
    let bound = bind(&t, &inputs);
    assert_eq!(bound.rejected.len(), 1);
    assert_eq!(bound.rejected[0].reason, "WeakeningRefused");
    assert!(bound.rejected[0].message.contains("shortened (30 -> 10)"));
    let text = render_config(&t, &bound, &inputs, &creds());
    assert!(
        text.contains("mode = \"compliance\"\ndays = 30\n"),
        "{text}"
    );
    // Lengthening is accepted and rendered.
    inputs.retention_locks[0].spec.days = 60;
    inputs.retention_locks[0].spec.mode = LockMode::Compliance;
    let bound = bind(&t, &inputs);
    assert!(bound.rejected.is_empty());
    assert!(render_config(&t, &bound, &inputs, &creds()).contains("days = 60\n"));
}
