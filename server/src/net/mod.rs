//! The HTTP edge shared by the REST API and the backup/reader sessions: response bodies, the error
//! type every handler returns, parameter parsing with PBS's lenient rules, TLS and the listener.

pub mod body;
pub mod error;
pub mod params;
pub mod pinned;
pub mod tls;

pub use body::{json_data, octet_stream, Body};
pub use error::HttpError;
pub use params::Params;
