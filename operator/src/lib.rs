//! PBS Cloud operator: turns `Tenant`, `Datastore`, `PrunePolicy` and `RetentionLock`
//! resources into one PBS-compatible server per tenant.
//!
//! Layers: `crd` (types) < `render` (pure desired state) < `controller` (API calls) <
//! `lifecycle` (signals, leader election, shutdown).

pub mod apiclient;
pub mod bench;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod health;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod purge;
pub mod render;
pub mod usage;
