//! Replays every recorded scenario of the wire corpus (`e2e/corpus/`: what the stock
//! `proxmox-backup-client` 3.2.4 / 4.2.3 and a PBS 4.2.3 pusher/puller sent to a stock PBS,
//! and what PBS answered) against our server, and fails on every difference the allowlist
//! below does not name. Each scenario prints one summary line and its allowlisted
//! differences (run with `--nocapture`; `CORPUS_REPLAY_VERBOSE=1` prints every difference,
//! volatile ones included).
//!
//! Where PBS 3.2.4 (`c3-*`/`c4-*` files) and PBS 4.2.3 (`s4-*` files) answer differently, our
//! server answers like 4.2.3; the 3.2.4 shape is listed here as an intended difference.

use pbs_cloud_e2e::corpus::{self, Allow, AllowKind::Intended, AllowKind::Volatile};

/// Every difference between our answers and PBS's that is accepted, with the reason.
const ALLOWLIST: &[Allow] = &[
    // ---- values that differ between two recordings of PBS itself -------------------------
    Allow {
        scenario: "*",
        seqs: &[],
        request: "*",
        what: "binary:index.uuid|binary:index.ctime",
        kind: Volatile,
        reason: "index header uuid (random) and ctime (clock) of every new index",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */admin/datastore/store1/status",
        what: "body:data.avail|body:data.total|body:data.used",
        kind: Volatile,
        reason: "disk usage of the datastore",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */nodes/localhost/tasks/*",
        what: "body:data.pid|body:data.pstart|body:data.starttime|body:data.endtime|body:data.node|body:active|body:total",
        kind: Volatile,
        reason: "process ids, clock times and node name of a task; whether it is still running and how many log lines it has at the moment of the poll",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */nodes/localhost/tasks?*|GET */nodes/localhost/tasks",
        what: "body:total|body:data[].upid|body:data[].pid|body:data[].pstart|body:data[].starttime|body:data[].endtime",
        kind: Volatile,
        reason: "task lists count the tasks of every session on the server; ids and times of a task are clock and process values",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "*",
        what: "binary:manifest:unprotected.chunk_upload_stats.compressed_size|binary:manifest:unprotected.chunk_upload_stats.count|binary:manifest:unprotected.chunk_upload_stats.duplicates|binary:manifest:unprotected.chunk_upload_stats.size",
        kind: Volatile,
        reason: "upload statistics the server adds to the manifest depend on which chunks the datastore already had",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */snapshots*",
        what: "body:data[].size",
        kind: Volatile,
        reason: "a snapshot's size includes its stored manifest, whose compressed bytes depend on the server (PBS 3.2.4 and 4.2.3 store 443-446 bytes for the same JSON)",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */snapshots*|GET */files?*",
        what: "body:data[].files[].size|body:data[].size",
        kind: Volatile,
        reason: "size of the stored manifest index.json.blob (compressed bytes depend on the server)",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */nodes/localhost/identity",
        what: "body:data.pbs-instance-id",
        kind: Volatile,
        reason: "random id of the installation",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */status/datastore-usage",
        what: "body:data[].avail|body:data[].total|body:data[].used|body:data[].history[]|body:data[].history-start",
        kind: Volatile,
        reason: "disk usage of the datastore (the newest history slot is used/total now) and the clock (the history starts 30 days before now)",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */status/datastore-usage",
        what: "body:data[].gc-status.upid|body:data[].gc-status.index-file-count|body:data[].gc-status.index-data-bytes|body:data[].gc-status.disk-bytes|body:data[].gc-status.disk-chunks|body:data[].gc-status.removed-bytes|body:data[].gc-status.removed-chunks|body:data[].gc-status.pending-bytes|body:data[].gc-status.pending-chunks|body:data[].gc-status.removed-bad|body:data[].gc-status.still-bad|body:data[].gc-status.cache-stats.hits|body:data[].gc-status.cache-stats.misses",
        kind: Volatile,
        reason: "figures of the last garbage collection count every index and chunk of the recorded datastore, which the other recording sessions shared; its task id holds process ids and the clock (keys are still compared)",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */nodes/localhost/status",
        what: "body:data.cpu|body:data.wait|body:data.loadavg[]|body:data.uptime|body:data.memory.free|body:data.memory.total|body:data.memory.used|body:data.swap.free|body:data.swap.total|body:data.swap.used|body:data.root.avail|body:data.root.total|body:data.root.used|body:data.current-kernel.release|body:data.current-kernel.version|body:data.kversion|body:data.cpuinfo.cpus|body:data.cpuinfo.model|body:data.cpuinfo.sockets|body:data.boot-info.mode|body:data.boot-info.secureboot",
        kind: Volatile,
        reason: "figures of the machine at the moment of the call: load, memory, disk, uptime, and the kernel build, CPU and firmware of the host (keys are still compared)",
    },
    // ---- differences we chose ------------------------------------------------------------
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET /api2/json/version",
        what: "body:data.version|body:data.release|body:data.repoid",
        kind: Intended,
        reason: "our own version and source revision, not PBS's",
    },
    Allow {
        scenario: "c3-*|c4-*|s4-push-*|s4-pull-*",
        seqs: &[],
        request: "POST //api2/json/access/ticket",
        what: "body:status(key)|body:success(key)|header:content-type",
        kind: Intended,
        reason: "login answer of PBS 4.2.3 ({data,status:200,success:true}, content-type application/json); PBS 3.2.4 answers {data} with charset=UTF-8; both stock clients accept either (s4-c3-backup-restore is the 3.2.4 client against 4.2.3)",
    },
    Allow {
        scenario: "c3-*|c4-*|s4-push-*|s4-pull-*",
        seqs: &[],
        request: "*",
        what: "settings:MAX_CONCURRENT_STREAMS|settings:MAX_HEADER_LIST_SIZE",
        kind: Intended,
        reason: "HTTP/2 SETTINGS of PBS 4.2.3 (MAX_CONCURRENT_STREAMS 200, MAX_HEADER_LIST_SIZE 16384); PBS 3.2.4 sends no stream limit and a 16 MiB header list",
    },
    Allow {
        scenario: "c4-metadata-mode-identity-groupforget-tasks",
        seqs: &[39],
        request: "GET /api2/json/nodes/localhost/identity",
        what: "status|body:*",
        kind: Intended,
        reason: "PBS 4.2.3 serves server-identity; 3.2.4 answers 404",
    },
    Allow {
        scenario: "c3-*|c4-*|s4-push-*",
        seqs: &[],
        request: "DELETE */groups?*|DELETE */namespace?*",
        what: "body:data(type)",
        kind: Intended,
        reason: "group forget and namespace delete answer PBS 4.x's removal counts ({removed-groups, removed-snapshots, protected-snapshots[, removed-namespaces]}); PBS 3.2.4 answers null",
    },
    Allow {
        scenario: "c3-*|c4-*",
        seqs: &[],
        request: "GET */admin/datastore/store1/status",
        what: "body:data.backend-type(key)",
        kind: Intended,
        reason: "PBS 4.2.3 adds backend-type to the datastore status; 3.2.4 has no such key",
    },
    Allow {
        scenario: "c3-*|c4-*",
        seqs: &[],
        request: "GET */nodes/localhost/tasks/*/status",
        what: "body:data.endtime(key)",
        kind: Intended,
        reason: "the task status of PBS 4.2.3 has endtime once the task stopped (s4-c4-pbs42-commands 42); 3.2.4 leaves it out",
    },
    Allow {
        scenario: "*",
        seqs: &[],
        request: "GET */access/users|GET */access/users?*",
        what: "body:digest",
        kind: Intended,
        reason: "the user list's digest is an opaque value clients only hand back; PBS hashes the text of its user config file (with fields this server does not keep), ours hashes the list",
    },
    Allow {
        scenario: "s4-push-sync-lock-race",
        seqs: &[24],
        request: "GET //api2/json/backup?*",
        what: "status|header:*|body:*",
        kind: Intended,
        reason: "PBS 3.2.4 keeps the group lock until the finished session's connection is gone and refused the pusher's next session; like 4.2.3 we release it in finish",
    },
];

async fn run(name: &str) {
    let report = corpus::replay_scenario(&corpus::corpus_dir(), name, ALLOWLIST)
        .await
        .unwrap_or_else(|e| panic!("{name}: the replay itself failed: {e}"));
    println!("{}", report.summary_line());
    if std::env::var_os("CORPUS_REPLAY_VERBOSE").is_some() {
        for line in report.all_lines() {
            println!("  {line}");
        }
    } else {
        for line in report.allowlisted_lines() {
            println!("  allowlisted: {line}");
        }
    }
    let mismatches = report.mismatch_lines();
    assert!(
        mismatches.is_empty(),
        "{}\n{} differences from PBS:\n{}",
        report.summary_line(),
        mismatches.len(),
        mismatches.join("\n")
    );
}

macro_rules! scenarios {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                run($file).await;
            }
        )*
        /// Files with a replay test above.
        const REPLAYED: &[&str] = &[$($file),*];
    };
}

scenarios! {
    c3_api_token => "c3-api-token",
    c3_backup_pxar_img => "c3-backup-pxar-img",
    c3_basic_info => "c3-basic-info",
    c3_encrypted_backup_restore => "c3-encrypted-backup-restore",
    c3_namespace => "c3-namespace",
    c3_notes_protected_prune_forget => "c3-notes-protected-prune-forget",
    c3_restore_catalog_files => "c3-restore-catalog-files",
    c3_uploadlog_gc_chown => "c3-uploadlog-gc-chown",
    c3_wrong_password => "c3-wrong-password",
    c4_api_token => "c4-api-token",
    c4_backup_pxar_img => "c4-backup-pxar-img",
    c4_basic_info => "c4-basic-info",
    c4_encrypted_backup_restore => "c4-encrypted-backup-restore",
    c4_metadata_mode_identity_groupforget_tasks => "c4-metadata-mode-identity-groupforget-tasks",
    c4_namespace => "c4-namespace",
    c4_notes_protected_prune_forget => "c4-notes-protected-prune-forget",
    c4_restore_catalog_files => "c4-restore-catalog-files",
    c4_uploadlog_gc_chown => "c4-uploadlog-gc-chown",
    c4_wrong_password => "c4-wrong-password",
    s4_c3_backup_restore => "s4-c3-backup-restore",
    s4_c4_backup_restore => "s4-c4-backup-restore",
    s4_c4_pbs42_commands => "s4-c4-pbs42-commands",
    s4_pull_sync => "s4-pull-sync",
    s4_push_sync => "s4-push-sync",
    s4_push_sync_lock_race => "s4-push-sync-lock-race",
    s4_rest_monitoring => "s4-rest-monitoring",
}

/// A scenario file without a test above would silently not be replayed.
#[test]
fn every_vendored_scenario_is_replayed() {
    let files = corpus::scenario_names(&corpus::corpus_dir()).expect("list e2e/corpus");
    assert!(!files.is_empty(), "e2e/corpus has no scenario files");
    let mut replayed: Vec<String> = REPLAYED.iter().map(|s| s.to_string()).collect();
    replayed.sort();
    assert_eq!(
        replayed, files,
        "add a line to `scenarios!` in e2e/tests/corpus_replay.rs for every e2e/corpus/*.jsonl"
    );
}

/// The replay must notice differences: three recorded answers of `c4-namespace` are altered
/// (a status, a JSON value, a chunk digest in an answer) and exactly those three must come
/// out as mismatches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_altered_answers() {
    let dir = tempfile::tempdir().unwrap();
    let src = corpus::corpus_dir();
    let name = "c4-namespace";
    std::fs::copy(
        src.join(format!("{name}.meta.json")),
        dir.path().join(format!("{name}.meta.json")),
    )
    .unwrap();
    let text = std::fs::read_to_string(src.join(format!("{name}.jsonl"))).unwrap();
    let mut changed = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let alter = |from: &str, to: &str| {
                let at = l.rfind(from).expect("text to alter");
                format!("{}{to}{}", &l[..at], &l[at + from.len()..])
            };
            let out = if l.starts_with("{\"seq\":2,") {
                alter("\"status\":200", "\"status\":201")
            } else if l.starts_with("{\"seq\":13,") {
                alter("4dd10de66a2c", "5dd10de66a2c")
            } else if l.starts_with("{\"seq\":22,") {
                alter("\"protected\":false", "\"protected\":true")
            } else {
                return l.to_string();
            };
            changed += 1;
            out
        })
        .collect();
    assert_eq!(changed, 3);
    std::fs::write(
        dir.path().join(format!("{name}.jsonl")),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let report = corpus::replay_scenario(dir.path(), name, ALLOWLIST)
        .await
        .unwrap();
    let mut found: Vec<(u32, String)> = report
        .exchanges
        .iter()
        .flat_map(|e| {
            e.judged
                .iter()
                .filter(|j| j.allowed_by.is_none())
                .map(move |j| (e.result.seq, j.diff.what.clone()))
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (2, "status".to_string()),
            (13, "body:data".to_string()),
            (22, "body:data[].protected".to_string()),
        ],
        "{}",
        report.mismatch_lines().join("\n")
    );
}

/// Every allowlist entry says why its difference is acceptable.
#[test]
fn allowlist_entries_have_reasons() {
    for a in ALLOWLIST {
        assert!(
            a.reason.len() > 20,
            "allowlist entry {:?} needs a reason",
            a.what
        );
    }
}
