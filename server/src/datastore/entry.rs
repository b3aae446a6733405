//! A datastore as the server offers it: the open store with the name clients use and the
//! tenant that owns it. The server state keeps one per configured datastore.

use std::sync::Arc;

use super::Datastore;

/// A datastore as the server exposes it: its name, the tenant that owns it and the store itself.
pub struct DatastoreEntry {
    pub name: String,
    pub tenant: String,
    pub comment: Option<String>,
    pub store: Arc<Datastore>,
}
