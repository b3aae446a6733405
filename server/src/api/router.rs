//! Maps a request path below `/api2/json` to a [`Route`]. Segments are percent-decoded one by
//! one, so a UPID or a store name may contain encoded characters without changing the shape.
//! Empty segments are ignored, as PBS does (see [`crate::net::path`]).

use percent_encoding::percent_decode_str;

use crate::net::path::raw_segments;
use crate::net::HttpError;

/// Longest accepted path plus query (PBS answers 414 beyond this).
pub const MAX_URI_LEN: usize = 3072;

/// Operations below `/admin/datastore/{store}/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatastoreOp {
    Status,
    Groups,
    Snapshots,
    Files,
    Notes,
    GroupNotes,
    Protected,
    Namespace,
    Prune,
    UploadBackupLog,
    ChangeOwner,
    Gc,
    Download,
    DownloadDecoded,
    Catalog,
    PxarFileDownload,
    RetentionLock,
    Verify,
    JobHistory,
    MoveGroup,
    MoveNamespace,
    UsageHistory,
}

impl DatastoreOp {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "status" => Self::Status,
            "groups" => Self::Groups,
            "snapshots" => Self::Snapshots,
            "files" => Self::Files,
            "notes" => Self::Notes,
            "group-notes" => Self::GroupNotes,
            "protected" => Self::Protected,
            "namespace" => Self::Namespace,
            "prune" => Self::Prune,
            "upload-backup-log" => Self::UploadBackupLog,
            "change-owner" => Self::ChangeOwner,
            "gc" => Self::Gc,
            "download" => Self::Download,
            "download-decoded" => Self::DownloadDecoded,
            "catalog" => Self::Catalog,
            "pxar-file-download" => Self::PxarFileDownload,
            "retention-lock" => Self::RetentionLock,
            "verify" => Self::Verify,
            "job-history" => Self::JobHistory,
            "move-group" => Self::MoveGroup,
            "move-namespace" => Self::MoveNamespace,
            "usage-history" => Self::UsageHistory,
            _ => return None,
        })
    }
}

/// What a request addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    AccessTicket,
    /// `/access/users/{userid}/token/{name}`
    UserToken {
        userid: String,
        name: String,
    },
    /// `/access/acl`
    Acl,
    NodeIdentity,
    Nodes,
    NodeStatus,
    DatastoreUsage,
    AccessPermissions,
    AccessUsers,
    Tasks,
    Task {
        upid: String,
    },
    TaskStatus {
        upid: String,
    },
    TaskLog {
        upid: String,
    },
    DatastoreList,
    Datastore {
        store: String,
        op: DatastoreOp,
    },
    Tenants,
    Tenant {
        tenant: String,
    },
    TenantUsage {
        tenant: String,
    },
    Jobs {
        kind: String,
    },
    JobRun {
        kind: String,
        id: String,
    },
    TenantCompliance {
        tenant: String,
    },
    BackupUpgrade,
    ReaderUpgrade,
}

impl Route {
    /// True for the only endpoint that works without authentication.
    pub fn is_public(&self) -> bool {
        matches!(self, Route::AccessTicket)
    }
}

/// The answer PBS gives for an unknown path.
pub fn not_found(path: &str) -> HttpError {
    HttpError::not_found(format!("Path '{path}' not found."))
}

/// Splits and percent-decodes the path segments after `/api2/json`.
fn segments(path: &str) -> Option<Vec<String>> {
    let mut raw = raw_segments(path);
    if (raw.next(), raw.next()) != (Some("api2"), Some("json")) {
        return None;
    }
    Some(
        raw.map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect(),
    )
}

/// Resolves a raw (still percent-encoded) request path.
pub fn route(path: &str) -> Result<Route, HttpError> {
    let segs = segments(path).ok_or_else(|| not_found(path))?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let r = match s.as_slice() {
        ["version"] => Route::Version,
        ["access", "ticket"] => Route::AccessTicket,
        ["access", "users", userid, "token", name] => Route::UserToken {
            userid: userid.to_string(),
            name: name.to_string(),
        },
        ["access", "acl"] => Route::Acl,
        ["nodes", _node, "identity"] => Route::NodeIdentity,
        ["nodes"] => Route::Nodes,
        ["nodes", _node, "status"] => Route::NodeStatus,
        ["status", "datastore-usage"] => Route::DatastoreUsage,
        ["access", "permissions"] => Route::AccessPermissions,
        ["access", "users"] => Route::AccessUsers,
        ["nodes", _node, "tasks"] => Route::Tasks,
        ["nodes", _node, "tasks", upid] => Route::Task {
            upid: upid.to_string(),
        },
        ["nodes", _node, "tasks", upid, "status"] => Route::TaskStatus {
            upid: upid.to_string(),
        },
        ["nodes", _node, "tasks", upid, "log"] => Route::TaskLog {
            upid: upid.to_string(),
        },
        ["admin", "datastore"] => Route::DatastoreList,
        ["admin", "datastore", store, op] => match DatastoreOp::parse(op) {
            Some(op) => Route::Datastore {
                store: store.to_string(),
                op,
            },
            None => return Err(not_found(path)),
        },
        // Configured prune, verify or GC jobs, and starting one now.
        ["admin", kind @ ("prune" | "verify" | "sync" | "gc")] => Route::Jobs {
            kind: kind.to_string(),
        },
        ["admin", kind @ ("prune" | "verify" | "sync" | "gc"), id, "run"] => Route::JobRun {
            kind: kind.to_string(),
            id: id.to_string(),
        },
        ["tenants"] => Route::Tenants,
        ["tenants", tenant] => Route::Tenant {
            tenant: tenant.to_string(),
        },
        ["tenants", tenant, "usage"] => Route::TenantUsage {
            tenant: tenant.to_string(),
        },
        ["tenants", tenant, "compliance-report"] => Route::TenantCompliance {
            tenant: tenant.to_string(),
        },
        ["backup"] => Route::BackupUpgrade,
        ["reader"] => Route::ReaderUpgrade,
        _ => return Err(not_found(path)),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve() {
        assert_eq!(route("/api2/json/version").unwrap(), Route::Version);
        assert_eq!(
            route("/api2/json/access/ticket/").unwrap(),
            Route::AccessTicket
        );
        assert_eq!(
            route("/api2/json/admin/datastore/store%31/snapshots").unwrap(),
            Route::Datastore {
                store: "store1".into(),
                op: DatastoreOp::Snapshots
            }
        );
        assert_eq!(
            route("/api2/json/nodes/localhost/tasks/UPID%3Anode%3A0000%3A/log").unwrap(),
            Route::TaskLog {
                upid: "UPID:node:0000:".into()
            }
        );
        assert_eq!(
            route("/api2/json/tenants/acme/usage").unwrap(),
            Route::TenantUsage {
                tenant: "acme".into()
            }
        );
        assert_eq!(route("/api2/json/backup").unwrap(), Route::BackupUpgrade);
    }

    /// Endpoints of PBS 4.2's client commands and of monitoring tools.
    #[test]
    fn pbs42_and_monitoring_routes() {
        assert_eq!(
            route("/api2/json/admin/datastore/store1/move-group").unwrap(),
            Route::Datastore {
                store: "store1".into(),
                op: DatastoreOp::MoveGroup
            }
        );
        assert_eq!(
            route("/api2/json/admin/datastore/store1/move-namespace").unwrap(),
            Route::Datastore {
                store: "store1".into(),
                op: DatastoreOp::MoveNamespace
            }
        );
        assert_eq!(route("/api2/json/nodes").unwrap(), Route::Nodes);
        assert_eq!(
            route("/api2/json/nodes/localhost/status").unwrap(),
            Route::NodeStatus
        );
        assert_eq!(
            route("/api2/json/status/datastore-usage").unwrap(),
            Route::DatastoreUsage
        );
        assert_eq!(
            route("/api2/json/access/permissions").unwrap(),
            Route::AccessPermissions
        );
        assert_eq!(
            route("/api2/json/access/users").unwrap(),
            Route::AccessUsers
        );
    }

    #[test]
    fn unknown_paths_are_404_with_pbs_text() {
        let err = route("/api2/json/x").unwrap_err();
        assert_eq!(err.status, http::StatusCode::NOT_FOUND);
        assert_eq!(err.message, "Path '/api2/json/x' not found.");
        assert!(route("/api2/json/admin/datastore/s1/bogus").is_err());
        assert!(route("/api2/jsonx/version").is_err());
        assert!(route("/other").is_err());
        assert!(route("/api2").is_err());
        assert!(route("/json/api2/version").is_err());
    }

    /// Request targets exactly as the stock clients 3.2.4 and 4.2.3 send them (recorded in the
    /// wire corpus): the password login and both session upgrades carry a doubled slash.
    #[test]
    fn stock_client_targets_route() {
        assert_eq!(
            route("//api2/json/access/ticket").unwrap(),
            Route::AccessTicket
        );
        assert_eq!(route("//api2/json/backup").unwrap(), Route::BackupUpgrade);
        assert_eq!(route("//api2/json/reader").unwrap(), Route::ReaderUpgrade);
        assert_eq!(
            route("/api2/json/admin/datastore/store1/groups").unwrap(),
            Route::Datastore {
                store: "store1".into(),
                op: DatastoreOp::Groups
            }
        );
    }

    /// PBS drops every empty segment, wherever it is.
    #[test]
    fn empty_segments_are_ignored_everywhere() {
        for target in [
            "/api2//json/version",
            "/api2/json//version",
            "///api2/json/version//",
            "/api2/json/version/",
        ] {
            assert_eq!(route(target).unwrap(), Route::Version, "{target}");
        }
        assert_eq!(
            route("/api2/json//admin/datastore//store1/snapshots").unwrap(),
            Route::Datastore {
                store: "store1".into(),
                op: DatastoreOp::Snapshots
            }
        );
    }
}
