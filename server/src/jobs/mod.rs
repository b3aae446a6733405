//! Scheduled datastore jobs (DESIGN: the `jobs/` layer, above `datastore/` and `tasks/`):
//! PBS calendar events, the scheduler that starts prune, verify and GC jobs as tasks, and the
//! per-job state that makes a run missed while the server was down happen once after start.

pub mod calendar;
