use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/pbs-cloud.toml"), text)
}

#[test]
fn full_file_parses() {
    let config = parse(
        r#"
listen_addr = "127.0.0.1:8007"
data_dir = "/var/lib/pbs-cloud"

[[tenant]]
id = "acme"

[[datastore]]
name = "store1"
tenant = "acme"
path = "/srv/store1"

[[user]]
userid = "alice@pbs"
tenant = "acme"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$abc$def"

[[token]]
tokenid = "alice@pbs!ci"
secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$abc$def"

[[acl]]
path = "/datastore/store1"
authid = "alice@pbs!ci"
role = "DatastoreBackup"
"#,
    )
    .unwrap();
    assert_eq!(config.listen_addr().unwrap().port(), 8007);
    assert_eq!(config.default_tenant(), "acme");
    assert_eq!(config.datastores[0].name.get_ref(), "store1");
}

#[test]
fn unknown_field_names_line_and_field() {
    let err = parse("listen = \"0.0.0.0:8007\"\n\n[[datastore]]\nname = \"store1\"\nsize = 3\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/etc/pbs-cloud.toml"), "{text}");
    assert!(text.contains("line 5"), "{text}");
    assert!(text.contains("size"), "{text}");
}

#[test]
fn invalid_values_name_line_and_field() {
    let err = parse("[[datastore]]\nname = \"store1\"\n\n[[datastore]]\nname = \"../etc\"\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("line 5") && text.contains("datastore[1].name"),
        "{text}"
    );

    let err = parse("[[datastore]]\nname = \"store1\"\ntenant = \"nobody\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown tenant 'nobody'"), "{err}");

    let err = parse("listen = \"nowhere\"\n").unwrap_err();
    assert!(err.to_string().contains("line 1: listen"), "{err}");

    let err = parse("[[user]]\nuserid = \"bob\"\n").unwrap_err();
    assert!(err.to_string().contains("user[0].userid"), "{err}");

    let err = parse("[[acl]]\npath = \"/datastore/x\"\nauthid = \"a@pbs\"\nrole = \"God\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown role 'God'"), "{err}");
}

#[test]
fn broken_syntax_is_refused() {
    let err = parse("listen = \n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 1, .. }), "{err}");
}

#[test]
fn empty_file_is_the_default() {
    let config = parse("").unwrap();
    assert!(config.datastores.is_empty());
    assert_eq!(config.default_tenant(), DEFAULT_TENANT);
}

#[test]
fn s3_datastore_and_jobs_parse() {
    let config = parse(
        r#"
listen_addr = "0.0.0.0:8007"

[[datastore]]
name = "store1"
gc_schedule = "daily"
[datastore.s3]
bucket = "pbs-backups"
prefix = "tenants/acme/store1"
endpoint = "http://127.0.0.1:7480"
region = "us-east-1"
path_style = true
storage_class = "STANDARD_IA"
sse = "AES256"

[[prune_job]]
id = "nightly"
store = "store1"
schedule = "*-*-* 02:00"
keep_daily = 7

[[retention_lock]]
id = "worm"
store = "store1"
mode = "compliance"
days = 30
"#,
    )
    .unwrap();
    let s3 = config.datastores[0].s3.as_ref().unwrap();
    assert_eq!(s3.bucket.get_ref(), "pbs-backups");
    assert_eq!(config.prune_jobs[0].keep_daily, Some(7));
    assert_eq!(config.retention_locks[0].mode.get_ref(), "compliance");
}

#[test]
fn seed_storage_section_parses() {
    let config = parse("listen_addr = \"0.0.0.0:8007\"\n[storage]\ntype = \"s3\"\nbucket = \"pbs\"\nregion = \"us-east-1\"\nendpoint = \"http://localhost:9000\"\n").unwrap();
    assert_eq!(config.storage.unwrap().kind.get_ref(), "s3");
    let err = parse("[storage]\ntype = \"tape\"\n").unwrap_err();
    assert!(err.to_string().contains("storage.type"), "{err}");
}

#[test]
fn s3_mistakes_name_the_field() {
    let err = parse("[[datastore]]\nname = \"store1\"\n[datastore.s3]\nbucket = \"pbs\"\nstorage_class = \"GLACIER\"\n").unwrap_err();
    assert!(
        err.to_string().contains("datastore[0].s3.storage_class")
            && err.to_string().contains("line 5"),
        "{err}"
    );
    let err = parse("[[datastore]]\nname = \"store1\"\n[datastore.s3]\nbucket = \"Bad_Bucket\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("s3.bucket"), "{err}");
    let err = parse(
        "[[datastore]]\nname = \"store1\"\n[datastore.s3]\nbucket = \"pbs\"\nsse = \"aws:kms\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("sse_kms_key_id"), "{err}");
    let err =
        parse("[[prune_job]]\nid = \"p\"\nstore = \"nope\"\nschedule = \"daily\"\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown datastore 'nope'"),
        "{err}"
    );
    let err =
        parse("[[retention_lock]]\nid = \"l\"\nstore = \"store1\"\nmode = \"forever\"\ndays = 3\n")
            .unwrap_err();
    assert!(err.to_string().contains("retention_lock[0].mode"), "{err}");
}

#[test]
fn job_quota_lifecycle_and_webhook_sections_parse_and_are_checked() {
    let config = parse(
        r#"
[[tenant]]
id = "acme"
quota_bytes = 1000000
quota_warn_percent = 80

[[datastore]]
name = "store1"
abandoned_after_hours = 12
lock_generation_days = 10
[datastore.lifecycle]
expire_noncurrent_after_days = 1
transition_after_days = 30
transition_storage_class = "STANDARD_IA"

[[verify_job]]
id = "nightly"
store = "store1"
schedule = "daily"
mode = "cheap"
outdated_after = 30

[webhook]
url = "https://billing.example/hook"
"#,
    )
    .unwrap();
    assert_eq!(config.tenants[0].quota_bytes, Some(1_000_000));
    assert_eq!(config.verify_jobs[0].outdated_after, Some(30));
    assert!(config.webhook.is_some());

    let err = parse(
        "[[datastore]]\nname = \"store1\"\n[[verify_job]]\nid = \"v\"\nstore = \"store1\"\nschedule = \"daily\"\nmode = \"quick\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("verify_job[0].mode") && err.contains("quick"),
        "{err}"
    );
    let err = parse("[webhook]\nurl = \"ftp://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("webhook.url"), "{err}");
}

#[test]
fn s3_conditional_writes_and_health_probe_settings() {
    let text = |mode: &str| {
        format!("[[datastore]]\nname = \"store1\"\n[datastore.s3]\nbucket = \"pbs\"\nconditional_writes = \"{mode}\"\nhealth_check_secs = 5\n")
    };
    for (mode, want) in [
        ("auto", crate::backend::s3::ConditionalWrites::Auto),
        ("if-none-match", crate::backend::s3::ConditionalWrites::On),
        ("head-then-put", crate::backend::s3::ConditionalWrites::Off),
    ] {
        let config = parse(&text(mode)).unwrap();
        let s3 = config.datastores[0].s3.as_ref().unwrap();
        let settings = crate::cli::storage::settings_from_s3_config(s3).unwrap();
        assert_eq!(settings.conditional_writes, want, "{mode}");
        assert_eq!(settings.health_interval, std::time::Duration::from_secs(5));
    }
    let config =
        parse("[[datastore]]\nname = \"store1\"\n[datastore.s3]\nbucket = \"pbs\"\n").unwrap();
    let s3 = config.datastores[0].s3.as_ref().unwrap();
    let settings = crate::cli::storage::settings_from_s3_config(s3).unwrap();
    assert_eq!(
        settings.conditional_writes,
        crate::backend::s3::ConditionalWrites::Auto
    );
    let err = parse(&text("sometimes")).unwrap_err().to_string();
    assert!(err.contains("datastore[0].s3.conditional_writes"), "{err}");
    assert!(err.contains("head-then-put"), "{err}");
}

#[test]
fn gc_atime_cutoff_is_pbs_range_in_minutes() {
    let text =
        |m: u64| format!("[[datastore]]\nname = \"store1\"\ngc_atime_cutoff_minutes = {m}\n");
    for ok in [1, 1445, 2880] {
        let config = parse(&text(ok)).unwrap();
        assert_eq!(config.datastores[0].gc_atime_cutoff_minutes, Some(ok));
    }
    for bad in [0, 2881] {
        let err = parse(&text(bad)).unwrap_err().to_string();
        assert!(
            err.contains("datastore[0].gc_atime_cutoff_minutes") && err.contains("1..2880"),
            "{bad}: {err}"
        );
    }
}
