//! Server-side encryption must be applied, not just asked for.
//!
//! A store may accept `x-amz-server-side-encryption` and store the object in the clear: Ceph
//! RGW 16 does exactly that for `AES256` when it has no SSE-S3 key backend (it answers 200 and
//! leaves the header out of its answer). So every put that asks for SSE checks the store's
//! answer; an object the store did not encrypt is deleted again and the put fails, naming what
//! was asked for and what the store reported.

use aws_sdk_s3::types::ServerSideEncryption;

use super::ops::Failure;
use super::{Req, S3Backend};

/// Error code of [`Failure`]s for objects the store did not encrypt as asked.
pub(super) const SSE_NOT_APPLIED: &str = "ServerSideEncryptionNotApplied";

impl S3Backend {
    /// `Ok` when no SSE was asked for or the answer reports the requested mode; otherwise
    /// deletes the object at `full` (best effort) and returns the failure to report.
    pub(super) async fn check_sse_applied(
        &self,
        full: &str,
        reported: Option<&ServerSideEncryption>,
    ) -> Result<(), Failure> {
        let Some(wanted) = &self.sse else {
            return Ok(());
        };
        if reported == Some(wanted) {
            return Ok(());
        }
        let _permit = self.permit().await;
        self.count_request(Req::Delete);
        let removed = self
            .client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .send()
            .await
            .is_ok();
        Err(not_applied(wanted, reported, removed))
    }
}

fn not_applied(
    wanted: &ServerSideEncryption,
    reported: Option<&ServerSideEncryption>,
    removed: bool,
) -> Failure {
    let reported = reported.map_or("no encryption".to_string(), |r| format!("'{}'", r.as_str()));
    let fate = if removed {
        "the unencrypted object was deleted again"
    } else {
        "deleting the unencrypted object failed too"
    };
    let message = format!(
        "the store accepted the object but reports {reported} instead of the requested \
         server-side encryption '{}' ({fate}); check the store's SSE support or the `sse` setting",
        wanted.as_str()
    );
    Failure {
        status: None,
        code: Some(SSE_NOT_APPLIED.to_string()),
        text: message.clone(),
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_names_both_modes() {
        let f = not_applied(&ServerSideEncryption::Aes256, None, true);
        let text = f.summary();
        assert!(text.starts_with(SSE_NOT_APPLIED), "{text}");
        assert!(text.contains("reports no encryption"), "{text}");
        assert!(
            text.contains("requested server-side encryption 'AES256'"),
            "{text}"
        );
        assert!(text.contains("deleted again"), "{text}");
        let f = not_applied(
            &ServerSideEncryption::AwsKms,
            Some(&ServerSideEncryption::Aes256),
            false,
        );
        assert!(f.summary().contains("reports 'AES256'"), "{}", f.summary());
    }
}
