//! Index writer endpoints (docs/protocol.md#backup-endpoints): `POST {fixed,dynamic}_index`
//! (create), `PUT {fixed,dynamic}_index` (append) and `POST {fixed,dynamic}_close`.

use bytes::Bytes;
use http::{header, Request, Response};
use hyper::body::Body as _;
use hyper::body::Incoming;
use serde_json::Value;

use crate::format::digest_to_hex;
use crate::format::fixed_index::{FixedIndex, FIXED_CHUNK_SIZE};
use crate::net::params::MAX_PARAM_BODY;
use crate::net::{json_data, Body, HttpError, Params};

use super::index_writers::{FixedWriter, IndexHeaderInfo};
use super::session::WriterKind;
use super::{task_log, BackupSession};
use crate::protocol::body::{read_up_to, BodyError};
use crate::protocol::error::ProtocolError;
use crate::protocol::params::{
    archive_name, digest, optional_ranged_u64, parse_digest, ranged_u64, wid,
};

/// Memory a parsed parameter body may take per body byte: a JSON array of one-digit numbers
/// or a form of one-letter values becomes ~16× its size as values, plus the lists built from
/// them.
const PARAM_MEMORY_FACTOR: u64 = 24;
/// Least budget reserved for a parameter request (query-only requests allocate too).
const PARAM_MEMORY_MIN: u64 = 16 * 1024;

/// Parameters of a non-upload request: query string, or a JSON/form body (PBS rules,
/// docs/protocol.md#parameters). Reading and parsing the body are charged to the session's buffer
/// budget (by the announced length, or the largest accepted body when none is announced).
async fn request_params(
    session: &BackupSession,
    req: Request<Incoming>,
) -> Result<Params, HttpError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let announced = match req.body().is_end_stream() {
        true => 0,
        false => hyper::body::Body::size_hint(req.body())
            .upper()
            .unwrap_or(MAX_PARAM_BODY as u64)
            .min(MAX_PARAM_BODY as u64),
    };
    let _buffer = session
        .budget()
        .buffer((announced * PARAM_MEMORY_FACTOR).max(PARAM_MEMORY_MIN))
        .await
        .map_err(ProtocolError::from)?;
    let limit = (MAX_PARAM_BODY - 1).min(announced as usize);
    let query = req.uri().query().map(str::to_string);
    let body = read_up_to(req.into_body(), limit.max(1))
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => {
                HttpError::bad_request("request parameter body too large")
            }
            other => HttpError::bad_request(other.to_string()),
        })?;
    Params::from_body(content_type.as_deref(), query.as_deref(), &body)
}

fn check_extension(name: &str, ext: &str) -> Result<(), HttpError> {
    if name.ends_with(ext) {
        Ok(())
    } else {
        Err(HttpError::bad_request(format!(
            "wrong archive extension: '{name}'"
        )))
    }
}

/// `POST dynamic_index?archive-name=X.didx` → `{"data": wid}`.
pub(super) async fn create_dynamic(
    session: &BackupSession,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = request_params(session, req).await?;
    let name = archive_name(&params, "archive-name")?;
    check_extension(&name, ".didx")?;
    let path = session.file_path(&name);
    let wid = session.state().create_dynamic(name)?;
    session
        .log
        .log(format!("created new dynamic index {wid} ({path})"));
    Ok(json_data(wid))
}

/// `POST fixed_index?archive-name=X.fidx[&size=S][&reuse-csum=H]` → `{"data": wid}`.
pub(super) async fn create_fixed(
    session: &BackupSession,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = request_params(session, req).await?;
    let name = archive_name(&params, "archive-name")?;
    let size = optional_ranged_u64(&params, "size", 1, u64::MAX)?;
    let reuse_csum = match params.str("reuse-csum")? {
        Some(text) => Some(parse_digest("reuse-csum", &text)?),
        None => None,
    };
    check_extension(&name, ".fidx")?;
    session.state().ensure_active()?;

    let header = IndexHeaderInfo::now();
    let writer = match reuse_csum {
        None => FixedWriter::new(name, size, header)?,
        Some(csum) => {
            let previous = previous_fixed_index(session, &name).await?;
            let previous_csum = previous.csum();
            if previous_csum != csum {
                return Err(HttpError::bad_request(format!(
                    "expected csum ({}) doesn't match last backup's ({}), cannot do incremental backup",
                    digest_to_hex(&csum),
                    digest_to_hex(&previous_csum)
                )));
            }
            if previous.chunk_size != FIXED_CHUNK_SIZE {
                return Err(HttpError::bad_request(format!(
                    "cannot reuse index - previous index uses chunk size {} (expected {})",
                    previous.chunk_size, FIXED_CHUNK_SIZE
                )));
            }
            let size = size.ok_or_else(|| {
                HttpError::bad_request("cannot reuse index - parameter 'size' is required")
            })?;
            FixedWriter::incremental(name, size, previous.digests, header)?
        }
    };
    let path = session.file_path(writer.name());
    let wid = session.state().create_fixed(writer)?;
    session
        .log
        .log(format!("created new fixed index {wid} ({path})"));
    Ok(json_data(wid))
}

/// The previous snapshot's index `name`, for `reuse-csum`.
async fn previous_fixed_index(
    session: &BackupSession,
    name: &str,
) -> Result<FixedIndex, HttpError> {
    let lease = session.lease().await?;
    if lease.previous().is_none() {
        return Err(HttpError::bad_request(
            "cannot reuse index - no valid previous backup exists",
        ));
    }
    let bytes: Bytes = match lease.read_previous_file(name).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            return Err(HttpError::bad_request(
                "cannot reuse index - no previous backup exists for archive",
            ))
        }
        Err(e) => return Err(ProtocolError::from(e).into()),
    };
    FixedIndex::parse(&bytes)
        .map_err(|e| HttpError::bad_request(format!("cannot reuse index - previous '{name}': {e}")))
}

/// The `offset-list` of an append: non-negative integers (numbers or decimal strings).
fn offset_list(params: &Params) -> Result<Vec<u64>, HttpError> {
    let bad = || HttpError::bad_param("offset-list", "expected a list of non-negative integers");
    match params.raw("offset-list") {
        None | Some(Value::Null) => Err(HttpError::missing_param("offset-list")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Number(n) => n.as_u64().ok_or_else(bad),
                Value::String(s) => s.trim().parse::<u64>().map_err(|_| bad()),
                _ => Err(bad()),
            })
            .collect(),
        Some(Value::Number(n)) => Ok(vec![n.as_u64().ok_or_else(bad)?]),
        Some(Value::String(s)) => Ok(vec![s.trim().parse::<u64>().map_err(|_| bad())?]),
        Some(_) => Err(bad()),
    }
}

/// `PUT {fixed,dynamic}_index` with JSON `{wid, digest-list, offset-list}` → `null`.
pub(super) async fn append(
    session: &BackupSession,
    kind: WriterKind,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = request_params(session, req).await?;
    let wid = wid(&params)?;
    if params.raw("digest-list").is_none() {
        return Err(HttpError::missing_param("digest-list"));
    }
    let digests = params
        .str_list("digest-list")?
        .iter()
        .map(|text| parse_digest("digest-list", text))
        .collect::<Result<Vec<_>, _>>()?;
    let offsets = offset_list(&params)?;

    let lease = session.lease().await?;
    session
        .state()
        .append(kind, wid, &digests, &offsets, |d| lease.known_chunk_size(d))?;
    Ok(json_data(Value::Null))
}

/// `POST {fixed,dynamic}_close?wid&chunk-count&size&csum` → `null`; stores the index file.
pub(super) async fn close(
    session: &BackupSession,
    kind: WriterKind,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let params = request_params(session, req).await?;
    let wid = wid(&params)?;
    let min = match kind {
        WriterKind::Dynamic => 1,
        WriterKind::Fixed => 0,
    };
    let chunk_count = ranged_u64(&params, "chunk-count", min, u64::MAX)?;
    let size = ranged_u64(&params, "size", min, u64::MAX)?;
    let csum = digest(&params, "csum")?;

    let lease = session.lease().await?;
    let (name, bytes, held) = session.state().close(kind, wid, chunk_count, size, &csum)?;
    let stats = session.state().writer_stats(wid);
    let uuid = task_log::index_uuid(&bytes);
    lease
        .write_file(&name, Bytes::from(bytes))
        .await
        .map_err(ProtocolError::from)?;
    drop(held);
    for line in task_log::upload_statistics(&name, &uuid, &csum, size, chunk_count, &stats) {
        session.log.log(line);
    }
    session
        .log
        .log(format!("successfully closed {} index {wid}", kind.label()));
    Ok(json_data(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_from_json_and_text() {
        let p = Params::from_json(br#"{"offset-list":[0,4194304,"8"]}"#).unwrap();
        assert_eq!(offset_list(&p).unwrap(), vec![0, 4194304, 8]);
        let p = Params::from_json(br#"{"offset-list":[-1]}"#).unwrap();
        assert!(offset_list(&p).is_err());
        let p = Params::from_json(br#"{}"#).unwrap();
        assert!(offset_list(&p).is_err());
        let p = Params::from_json(br#"{"offset-list":[]}"#).unwrap();
        assert!(offset_list(&p).unwrap().is_empty());
    }

    #[test]
    fn extensions() {
        assert!(check_extension("a.img.fidx", ".fidx").is_ok());
        assert_eq!(
            check_extension("a.img", ".fidx").unwrap_err().message,
            "wrong archive extension: 'a.img'"
        );
    }
}
