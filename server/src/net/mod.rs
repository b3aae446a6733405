//! The HTTP edge shared by the REST API and the backup/reader sessions: response bodies, the error
//! type every handler returns, parameter parsing with PBS's lenient rules, TLS and the listener.

pub mod body;
pub mod conn_limit;
pub mod error;
pub mod limits;
pub mod params;
pub mod path;
pub mod pinned;
pub mod request_body;
pub mod tls;

pub use body::{json_data, octet_stream, octet_stream_channel, streamed, Body};
pub use error::HttpError;
pub use params::Params;
