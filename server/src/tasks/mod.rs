//! Worker tasks (docs/protocol.md#tasks-and-upids): long-running operations such as garbage
//! collection or a prune with `use-task` run in the background under a UPID; clients follow their
//! log and status through `/nodes/localhost/tasks/{upid}/...`. Kept in memory (the last 1000
//! tasks).

pub mod registry;
pub mod upid;

pub use registry::{RunningTask, TaskListItem, TaskLog, TaskLogPage, TaskRegistry, TaskStatus};
pub use upid::Upid;

/// Errors of the task layer.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("invalid UPID '{0}'")]
    InvalidUpid(String),
    #[error("no such task '{0}'")]
    NotFound(String),
}
