//! The permission matrix: every REST endpoint of the router × every kind of caller (see
//! [`Who`]), with the status each gets, and for the listing endpoints exactly what each sees.
//! The endpoints are enumerated from `router.rs` itself, so an endpoint added without a row
//! here fails [`every_router_endpoint_has_a_matrix_row`].
//!
//! Cell letters, in the column order of [`Who::ALL`] (superuser, tenant admin, Audit-only,
//! Backup-only owner, Backup-only non-owner, namespace-scoped, other tenant, separated token,
//! token with its user's rights, anonymous): `A` allowed (the row's `ok` statuses: requests
//! that would change the fixture are built to stop right after the permission check, at a
//! protected snapshot, an existing name or a missing target), `F` 403, `H` 404 (hidden: another
//! tenant's object), `U` 401.

use http::{Method, StatusCode};

use super::matrix_fixture::{Fixture, Who, T0};
use super::router::{route, Route};

struct Row {
    method: Method,
    path: &'static str,
    /// Raw request body (parameters go in the query).
    body: &'static str,
    ok: &'static [u16],
    cells: &'static str,
}

const fn row(method: Method, path: &'static str, ok: &'static [u16], cells: &'static str) -> Row {
    Row {
        method,
        path,
        body: "",
        ok,
        cells,
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const DELETE: Method = Method::DELETE;

const SNAP: &str = "backup-type=vm&backup-id=100&backup-time=1700000000";

/// `{S}` is `/api2/json/admin/datastore/st1`, `{snap}` the snapshot `vm/100` at T0 (owned by
/// `backup@pbs`), `{upid}` the finished task of `backup@pbs`.
const ROWS: &[Row] = &[
    row(GET, "/api2/json/version", &[200], "AAAAAAAAAU"),
    row(
        POST,
        "/api2/json/access/ticket?username=nobody@pbs&password=x",
        &[401],
        "AAAAAAAAAA",
    ),
    row(DELETE, "/api2/json/access/ticket", &[200], "AAAAAAAAAA"),
    row(
        GET,
        "/api2/json/nodes/localhost/identity",
        &[200],
        "AAAAAAAAAU",
    ),
    row(GET, "/api2/json/nodes", &[200], "AFFFFFFFFU"),
    row(
        GET,
        "/api2/json/nodes/localhost/status",
        &[200],
        "AAFFFFAFFU",
    ),
    row(
        GET,
        "/api2/json/status/datastore-usage",
        &[200],
        "AAAAAAAAAU",
    ),
    row(GET, "/api2/json/access/permissions", &[200], "AAAAAAAAAU"),
    row(GET, "/api2/json/access/users", &[200], "AAAAAAAAAU"),
    // only the superuser creates tokens for other users (tokens never create tokens)
    row(
        POST,
        "/api2/json/access/users/nobody@pbs/token/t1",
        &[404],
        "AFFFFFFFFU",
    ),
    // ACL changes need Sys.Modify on `/`; allowed callers stop at the missing `path`
    row(PUT, "/api2/json/access/acl", &[400], "AAFFFFAFFU"),
    row(
        GET,
        "/api2/json/nodes/localhost/tasks",
        &[200],
        "AAAAAAAAAU",
    ),
    row(
        GET,
        "/api2/json/nodes/localhost/tasks/{upid}",
        &[200],
        "AAFAFFFFFU",
    ),
    row(
        GET,
        "/api2/json/nodes/localhost/tasks/{upid}/status",
        &[200],
        "AAFAFFFFFU",
    ),
    row(
        GET,
        "/api2/json/nodes/localhost/tasks/{upid}/log",
        &[200],
        "AAFAFFFFFU",
    ),
    row(
        DELETE,
        "/api2/json/nodes/localhost/tasks/{upid}",
        &[200, 404],
        "AAFAFFFFFU",
    ),
    row(GET, "/api2/json/admin/datastore", &[200], "AAAAAAAAAU"),
    row(GET, "{S}/status", &[200], "AAAAAAHAAU"),
    row(GET, "{S}/groups", &[200], "AAAAAFHAAU"),
    row(GET, "{S}/groups?ns=teamA", &[200], "AAAAAAHAAU"),
    row(
        DELETE,
        "{S}/groups?backup-type=vm&backup-id=100",
        &[400],
        "AAFFFFHFAU",
    ),
    row(GET, "{S}/snapshots", &[200], "AAAAAFHAAU"),
    row(GET, "{S}/snapshots?ns=teamA", &[200], "AAAAAAHAAU"),
    row(DELETE, "{S}/snapshots?{snap}", &[400], "AAFFFFHFAU"),
    row(GET, "{S}/files?{snap}", &[200], "AAAAFFHFAU"),
    row(
        GET,
        "{S}/files?ns=teamA&backup-type=host&backup-id=a2&backup-time=1700000000",
        &[200],
        "AAAFFAHFAU",
    ),
    row(GET, "{S}/notes?{snap}", &[200], "AAAAFFHFAU"),
    row(PUT, "{S}/notes?{snap}&notes=n", &[200], "AAFAFFHFAU"),
    row(
        GET,
        "{S}/group-notes?backup-type=vm&backup-id=100",
        &[200],
        "AAAAFFHFAU",
    ),
    row(
        PUT,
        "{S}/group-notes?backup-type=vm&backup-id=100&notes=n",
        &[200],
        "AAFAFFHFAU",
    ),
    row(GET, "{S}/protected?{snap}", &[200], "AAAAFFHFAU"),
    row(
        PUT,
        "{S}/protected?{snap}&protected=1",
        &[200],
        "AAFAFFHFAU",
    ),
    row(GET, "{S}/namespace", &[200], "AAAAAAHAAU"),
    row(POST, "{S}/namespace?name=teamB", &[400], "AAFFFFHFAU"),
    row(
        DELETE,
        "{S}/namespace?ns=teamB/none",
        &[400, 404],
        "AAFFFFHFAU",
    ),
    row(
        POST,
        "{S}/prune?backup-type=vm&backup-id=100&keep-last=1&dry-run=1",
        &[200],
        "AAFFFFHFAU",
    ),
    Row {
        method: POST,
        path: "{S}/upload-backup-log?{snap}",
        body: "not a blob",
        ok: &[400],
        cells: "AAFAFFHFAU",
    },
    row(
        POST,
        "{S}/change-owner?backup-type=vm&backup-id=100&new-owner=backup@pbs",
        &[200],
        "AAFFFFHFAU",
    ),
    row(POST, "{S}/gc", &[200, 409], "AAFFFFHFAU"),
    row(GET, "{S}/gc", &[200], "AAAFFFHFAU"),
    row(
        GET,
        "{S}/download?{snap}&file-name=index.json.blob",
        &[200],
        "AAFAFFHFAU",
    ),
    row(
        GET,
        "{S}/download-decoded?{snap}&file-name=index.json.blob",
        &[200],
        "AAFAFFHFAU",
    ),
    row(
        GET,
        "{S}/catalog?{snap}&filepath=root",
        &[400, 404],
        "AAFAFFHFAU",
    ),
    row(
        GET,
        "{S}/pxar-file-download?{snap}&filepath=Lw%3D%3D",
        &[400, 404],
        "AAFAFFHFAU",
    ),
    row(GET, "{S}/retention-lock?{snap}", &[200], "AAAAFFHFAU"),
    row(PUT, "{S}/retention-lock?{snap}", &[400], "AFFFFFHFFU"),
    row(POST, "{S}/verify?{snap}", &[200, 409], "AAFAFFHFAU"),
    row(GET, "{S}/job-history", &[200], "AAAFFFHFAU"),
    row(GET, "{S}/usage-history", &[200], "AAAFFFHFAU"),
    row(
        POST,
        "{S}/move-group?backup-type=vm&backup-id=100&target-ns=nowhere",
        &[400, 404],
        "AAFFFFHFAU",
    ),
    row(
        POST,
        "{S}/move-namespace?ns=teamB&target-ns=nowhere/x",
        &[400, 404],
        "AAFFFFHFAU",
    ),
    row(GET, "/api2/json/tenants", &[200], "AAAAAAAAAU"),
    row(POST, "/api2/json/tenants?id=acme", &[400], "AFFFFFFFFU"),
    row(GET, "/api2/json/tenants/acme", &[200], "AAAAAAHAAU"),
    row(GET, "/api2/json/tenants/acme/usage", &[200], "AAAFFFHFAU"),
    row(
        GET,
        "/api2/json/tenants/acme/compliance-report",
        &[200],
        "AAAAAAHAAU",
    ),
    row(GET, "/api2/json/admin/prune", &[200], "AAAAAAAAAU"),
    row(GET, "/api2/json/admin/verify", &[200], "AAAAAAAAAU"),
    row(GET, "/api2/json/admin/gc", &[200], "AAAAAAAAAU"),
    row(GET, "/api2/json/admin/sync", &[200], "AAAAAAAAAU"),
    row(
        POST,
        "/api2/json/admin/prune/p1/run?dry-run=1",
        &[200, 409],
        "AAFFFFHFAU",
    ),
    row(
        POST,
        "/api2/json/admin/verify/v1/run",
        &[200, 409],
        "AAFFFFHFAU",
    ),
    row(
        POST,
        "/api2/json/admin/gc/st1/run",
        &[200, 409],
        "AAFFFFHFAU",
    ),
    row(
        POST,
        "/api2/json/admin/sync/s1/run",
        &[200, 409],
        "AAFFFFHFAU",
    ),
    // Session upgrades need the live connection: in process they are refused before
    // authentication (their checks run in the protocol layer and its tests).
    row(GET, "/api2/json/backup", &[400], "AAAAAAAAAA"),
    row(GET, "/api2/json/reader", &[400], "AAAAAAAAAA"),
    // Answered before the API router.
    row(GET, "/metrics", &[200], "AAAAAAAAAU"),
    row(GET, "/healthz", &[200], "AAAAAAAAAA"),
    row(GET, "/readyz", &[200], "AAAAAAAAAA"),
];

fn expand(path: &str, fixture: &Fixture) -> String {
    path.replace("{S}", "/api2/json/admin/datastore/st1")
        .replace("{snap}", SNAP)
        .replace("{upid}", &fixture.task)
}

fn expected(cell: char, ok: &[u16]) -> Vec<u16> {
    match cell {
        'A' => ok.to_vec(),
        'F' => vec![403],
        'H' => vec![404],
        'U' => vec![401],
        other => panic!("unknown matrix cell '{other}'"),
    }
}

#[tokio::test]
async fn every_endpoint_answers_every_caller_kind_as_the_matrix_says() {
    assert!(SNAP.contains(&T0.to_string()));
    let fixture = Fixture::new().await;
    let mut wrong = Vec::new();
    for row in ROWS {
        assert_eq!(
            row.cells.len(),
            Who::ALL.len(),
            "{} {}",
            row.method,
            row.path
        );
        let uri = expand(row.path, &fixture);
        for (who, cell) in Who::ALL.iter().zip(row.cells.chars()) {
            let want = expected(cell, row.ok);
            let (status, _, text) = fixture
                .call(*who, row.method.clone(), &uri, row.body.as_bytes())
                .await;
            if !want.contains(&status.as_u16()) {
                wrong.push(format!(
                    "{} {uri} as {who:?}: {status} (want {want:?}): {}",
                    row.method,
                    text.chars().take(160).collect::<String>()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The text between `start` and the next `end` in `src`.
fn section<'a>(src: &'a str, start: &str, end: &str) -> &'a str {
    let from = src
        .find(start)
        .unwrap_or_else(|| panic!("'{start}' not in router.rs"));
    let rest = &src[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Splits a slice pattern's elements at top-level commas.
fn elements(pattern: &str) -> Vec<String> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for c in pattern.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Every concrete path below `/api2/json` that the patterns of `route()` in router.rs accept,
/// with the fixture's names in the variable segments.
fn router_paths(fixture: &Fixture) -> Vec<String> {
    let src = include_str!("router.rs");
    let ops: Vec<&str> = section(src, "fn parse(name: &str)", "_ => return None")
        .lines()
        .filter(|l| l.contains("=> Self::"))
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert!(ops.len() > 10, "operations not found in router.rs: {ops:?}");
    let mut paths = Vec::new();
    let body = section(src, "pub fn route(", "_ => return Err(not_found(path))");
    for line in body.lines().map(str::trim) {
        let Some(pattern) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] =>"))
            .map(|(p, _)| p)
        else {
            continue;
        };
        let mut shapes: Vec<Vec<String>> = vec![Vec::new()];
        for element in elements(pattern) {
            let choices: Vec<String> = if let Some(lit) = element.strip_prefix('"') {
                vec![lit.trim_end_matches('"').to_string()]
            } else if let Some((_, alts)) = element.split_once('@') {
                alts.trim()
                    .trim_matches(|c| c == '(' || c == ')')
                    .split('|')
                    .map(|a| a.trim().trim_matches('"').to_string())
                    .collect()
            } else {
                match element.as_str() {
                    "_node" => vec!["localhost".into()],
                    "store" => vec!["st1".into()],
                    "tenant" => vec!["acme".into()],
                    "upid" => vec![fixture.task.clone()],
                    // a user that does not exist: allowed callers stop at the 404
                    "userid" => vec!["nobody@pbs".into()],
                    "name" => vec!["t1".into()],
                    "op" => ops.iter().map(|o| o.to_string()).collect(),
                    // configured job ids: p1 (prune), v1 (verify), s1 (sync), st1 (gc); see below
                    "id" => vec!["{job}".into()],
                    other => panic!("unknown variable '{other}' in router.rs pattern"),
                }
            };
            shapes = shapes
                .into_iter()
                .flat_map(|s| {
                    choices.iter().map(move |c| {
                        let mut s = s.clone();
                        s.push(c.clone());
                        s
                    })
                })
                .collect();
        }
        for shape in shapes {
            let job = if shape.contains(&"verify".to_string()) {
                "v1"
            } else if shape.contains(&"gc".to_string()) {
                "st1"
            } else if shape.contains(&"sync".to_string()) {
                "s1"
            } else {
                "p1"
            };
            let path = format!("/api2/json/{}", shape.join("/")).replace("{job}", job);
            paths.push(path);
        }
    }
    assert!(paths.len() > 40, "router.rs patterns not found: {paths:?}");
    paths
}

fn route_of(path: &str) -> Option<Route> {
    route(path.split('?').next().unwrap_or(path)).ok()
}

/// Every path shape of router.rs, tried with every method as the superuser: whatever is not
/// refused with 405 is an endpoint and needs a row (same route, same method) in [`ROWS`].
#[tokio::test]
async fn every_router_endpoint_has_a_matrix_row() {
    let fixture = Fixture::new().await;
    let paths = router_paths(&fixture);
    let rows: Vec<(Method, Route)> = ROWS
        .iter()
        .filter_map(|r| Some((r.method.clone(), route_of(&expand(r.path, &fixture))?)))
        .collect();
    let mut missing = Vec::new();
    for path in &paths {
        let route = route(path).unwrap_or_else(|e| panic!("{path}: {}", e.message));
        for method in [GET, POST, PUT, DELETE] {
            // In process, session upgrades are refused whatever the method; on a connection
            // anything but GET is 405.
            let upgrade = matches!(route, Route::BackupUpgrade | Route::ReaderUpgrade);
            if upgrade && method != GET {
                continue;
            }
            let (status, _, _) = fixture
                .call(Who::Superuser, method.clone(), path, b"")
                .await;
            if status == StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            if !rows.iter().any(|(m, r)| *m == method && *r == route) {
                missing.push(format!("{method} {path} ({status})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "endpoints without a permission matrix row:\n{}",
        missing.join("\n")
    );
}
