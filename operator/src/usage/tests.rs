use super::*;
use crate::crd::TenantStatus;

const SAMPLE: &str = r#"{"data":{
  "tenant":"acme","logical-bytes":5000,"physical-bytes":1200,"chunks":7,"snapshots":2,
  "groups":1,"quota-bytes":1300,"quota-warning":true,
  "datastores":[
    {"store":"store1","logical-bytes":5000,"physical-bytes":1200,"chunks":7,"snapshots":2,
     "groups":1,"s3-requests":42},
    {"store":"local","logical-bytes":0,"physical-bytes":0,"chunks":0,"snapshots":0,"groups":0}
  ]}}"#;

#[test]
fn parses_the_usage_envelope() {
    let r = parse("acme", SAMPLE.as_bytes()).expect("parse");
    assert_eq!(r.tenant, "acme");
    assert_eq!(
        (
            r.logical_bytes,
            r.physical_bytes,
            r.chunks,
            r.snapshots,
            r.groups
        ),
        (5000, 1200, 7, 2, 1)
    );
    assert_eq!(r.quota_bytes, Some(1300));
    assert!(r.quota_warning);
    assert_eq!(r.datastores.len(), 2);
    assert_eq!(r.datastores[0].s3_requests, Some(42));
    assert_eq!(r.datastores[1].s3_requests, None);
}

#[test]
fn null_quota_and_request_counts_per_kind() {
    let body = r#"{"data":{"tenant":"t","logical-bytes":1,"physical-bytes":1,"chunks":1,
      "snapshots":1,"groups":1,"quota-bytes":null,"quota-warning":false,
      "datastores":[{"store":"s","logical-bytes":1,"physical-bytes":1,"chunks":1,
        "snapshots":1,"groups":1,"s3-requests":{"get":3,"put":4,"list":1}}]}}"#;
    let r = parse("t", body.as_bytes()).expect("parse");
    assert_eq!(r.quota_bytes, None);
    assert!(!r.quota_warning);
    assert_eq!(r.datastores[0].s3_requests, Some(8));
}

#[test]
fn malformed_answers_name_the_tenant() {
    for body in [
        "not json",
        r#"{"errors":"x"}"#,
        r#"{"data":{"tenant":"t"}}"#,
        r#"{"data":{"tenant":"t","logical-bytes":-1,"physical-bytes":1,"chunks":1,"snapshots":1,"groups":1}}"#,
    ] {
        let e = parse("acme", body.as_bytes()).expect_err(body);
        assert!(
            e.to_string()
                .starts_with("usage of tenant acme: malformed answer"),
            "{e}"
        );
    }
}

#[test]
fn usage_goes_into_status_with_condition_and_events_on_change() {
    let report = parse("acme", SAMPLE.as_bytes()).expect("parse");
    let mut status = TenantStatus::default();
    let ev = apply_usage(&mut status, report.to_status("t1"), Some(3), "t1").expect("event");
    assert_eq!(ev.reason, "QuotaWarning");
    assert!(ev.warning);
    assert_eq!(
        ev.note,
        "tenant is near its quota: 1200 of 1300 quota bytes used (92%)"
    );
    assert_eq!(status.used_bytes, Some(1200));
    let usage = status.usage.clone().expect("usage");
    assert_eq!(usage.read_at, "t1");
    assert_eq!(usage.datastores[0].store, "store1");
    assert_eq!(usage.datastores[0].s3_requests, Some(42));
    let c = &status.conditions[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        ("QuotaWarning", "True", "QuotaNearlyFull")
    );
    assert_eq!(c.observed_generation, Some(3));

    // Still on: no new event, transition time kept.
    assert_eq!(
        apply_usage(&mut status, report.to_status("t2"), Some(3), "t2"),
        None
    );
    assert_eq!(status.conditions[0].last_transition_time, "t1");

    // Off again: an event, the condition flips.
    let mut below = report.clone();
    below.quota_warning = false;
    below.physical_bytes = 100;
    let ev = apply_usage(&mut status, below.to_status("t3"), Some(3), "t3").expect("event");
    assert_eq!(ev.reason, "QuotaOk");
    assert!(!ev.warning);
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(status.conditions[0].last_transition_time, "t3");
    assert_eq!(status.used_bytes, Some(100));
}

#[test]
fn status_serializes_in_camel_case() {
    let report = parse("acme", SAMPLE.as_bytes()).expect("parse");
    let v = serde_json::to_value(report.to_status("now")).expect("json");
    assert_eq!(v["physicalBytes"], 1200);
    assert_eq!(v["quotaBytes"], 1300);
    assert_eq!(v["quotaWarning"], true);
    assert_eq!(v["datastores"][0]["s3Requests"], 42);
    assert!(v["datastores"][1].get("s3Requests").is_none());
}

#[test]
fn token_secret_is_percent_encoded() {
    assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
    assert_eq!(encode("a+b/c=:"), "a%2Bb%2Fc%3D%3A");
}
