//! Object Lock and lifecycle requests of the S3 backend (docs/design.md#retention-locks): the
//! bucket's Object Lock configuration, per-object retention and legal hold, version listing and
//! version deletes (with governance bypass only when the caller asks), and lifecycle rules for this
//! backend's prefix merged into the bucket's other rules.

use std::sync::atomic::Ordering;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, Delete, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
    NoncurrentVersionExpiration, ObjectIdentifier, ObjectLockEnabled, ObjectLockLegalHold,
    ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode, Transition,
    TransitionStorageClass,
};
use aws_smithy_types::DateTime;

use super::ops::Failure;
use super::{Req, S3Backend};
use crate::backend::lock::{LifecycleRules, LockMode, ObjectLock, ObjectVersion, Retention};
use crate::backend::BackendError;

/// Lifecycle rule ids this server owns start with this.
pub const RULE_ID_PREFIX: &str = "pbs-cloud:";

impl S3Backend {
    fn count_lock(&self, kind: Req) {
        self.lock_requests.fetch_add(1, Ordering::Relaxed);
        self.count_request(kind);
    }

    /// Id of the lifecycle rule for this backend's prefix (S3 allows 255 characters).
    fn rule_id(&self) -> String {
        let id = format!("{RULE_ID_PREFIX}{}", self.settings.prefix);
        if id.len() <= 255 {
            id
        } else {
            let hash = crate::format::sha256(self.settings.prefix.as_bytes());
            format!("{RULE_ID_PREFIX}{}", hex::encode(hash))
        }
    }

    fn bucket_label(&self) -> String {
        format!("s3://{}", self.settings.bucket)
    }

    /// The bucket's lifecycle rules, empty when it has none.
    async fn bucket_rules(&self) -> Result<Vec<LifecycleRule>, BackendError> {
        let _permit = self.permit().await?;
        self.count_request(Req::Get);
        match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.settings.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out.rules().to_vec()),
            Err(e) => {
                let f = Failure::from_sdk(&e);
                if f.status == Some(404)
                    || f.code.as_deref() == Some("NoSuchLifecycleConfiguration")
                {
                    Ok(Vec::new())
                } else {
                    Err(BackendError::Remote {
                        key: self.bucket_label(),
                        message: format!(
                            "S3 GetBucketLifecycleConfiguration of bucket '{}' at {} failed: {}",
                            self.settings.bucket,
                            self.endpoint_label(),
                            f.text
                        ),
                    })
                }
            }
        }
    }

    fn build_rule(&self, rules: &LifecycleRules) -> Result<LifecycleRule, BackendError> {
        let mut rule = LifecycleRule::builder()
            .id(self.rule_id())
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(self.settings.prefix.clone())
                    .build(),
            );
        if let Some(days) = rules.expire_noncurrent_after_days {
            rule = rule.noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(days.min(i32::MAX as u32) as i32)
                    .build(),
            );
        }
        if let (Some(days), Some(class)) =
            (rules.transition_after_days, &rules.transition_storage_class)
        {
            rule = rule.transitions(
                Transition::builder()
                    .days(days.min(i32::MAX as u32) as i32)
                    .storage_class(TransitionStorageClass::from(class.as_str()))
                    .build(),
            );
        }
        rule.build().map_err(|e| BackendError::Internal {
            key: self.bucket_label(),
            message: format!("building lifecycle rule: {e}"),
        })
    }
}

fn mode_to_s3(mode: LockMode) -> ObjectLockRetentionMode {
    match mode {
        LockMode::Governance => ObjectLockRetentionMode::Governance,
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
    }
}

#[async_trait::async_trait]
impl ObjectLock for S3Backend {
    async fn object_lock_enabled(&self) -> Result<bool, BackendError> {
        let _permit = self.permit().await?;
        self.count_request(Req::Get);
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.settings.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&ObjectLockEnabled::Enabled)),
            Err(e) => {
                let f = Failure::from_sdk(&e);
                if f.status == Some(404)
                    || f.code.as_deref() == Some("ObjectLockConfigurationNotFoundError")
                {
                    Ok(false)
                } else {
                    Err(BackendError::Remote {
                        key: self.bucket_label(),
                        message: format!(
                            "S3 GetObjectLockConfiguration of bucket '{}' at {} failed: {}",
                            self.settings.bucket,
                            self.endpoint_label(),
                            f.text
                        ),
                    })
                }
            }
        }
    }

    async fn set_retention(
        &self,
        key: &str,
        retention: Retention,
        bypass_governance: bool,
    ) -> Result<(), BackendError> {
        let full = self.full_key(key)?;
        let mut req = self
            .client
            .put_object_retention()
            .bucket(&self.settings.bucket)
            .key(&full)
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode_to_s3(retention.mode))
                    .retain_until_date(DateTime::from_secs(retention.retain_until))
                    .build(),
            );
        if bypass_governance {
            req = req.bypass_governance_retention(true);
        }
        let _permit = self.permit().await?;
        self.count_lock(Req::Put);
        req.send()
            .await
            .map_err(|e| self.remote_error("PutObjectRetention", key, Failure::from_sdk(&e)))?;
        Ok(())
    }

    async fn get_retention(&self, key: &str) -> Result<Option<Retention>, BackendError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        self.count_lock(Req::Get);
        let out = match self
            .client
            .get_object_retention()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let f = Failure::from_sdk(&e);
                // An object without retention answers 404 NoSuchObjectLockConfiguration.
                if f.code.as_deref() == Some("NoSuchObjectLockConfiguration") {
                    return Ok(None);
                }
                return Err(self.remote_error("GetObjectRetention", key, f));
            }
        };
        let Some(r) = out.retention() else {
            return Ok(None);
        };
        let mode = match r.mode() {
            Some(ObjectLockRetentionMode::Compliance) => LockMode::Compliance,
            Some(ObjectLockRetentionMode::Governance) => LockMode::Governance,
            _ => return Ok(None),
        };
        let Some(until) = r.retain_until_date() else {
            return Ok(None);
        };
        Ok(Some(Retention {
            mode,
            retain_until: until.secs(),
        }))
    }

    async fn set_legal_hold(&self, key: &str, on: bool) -> Result<(), BackendError> {
        let full = self.full_key(key)?;
        let status = match on {
            true => ObjectLockLegalHoldStatus::On,
            false => ObjectLockLegalHoldStatus::Off,
        };
        let _permit = self.permit().await?;
        self.count_lock(Req::Put);
        self.client
            .put_object_legal_hold()
            .bucket(&self.settings.bucket)
            .key(&full)
            .legal_hold(ObjectLockLegalHold::builder().status(status).build())
            .send()
            .await
            .map_err(|e| self.remote_error("PutObjectLegalHold", key, Failure::from_sdk(&e)))?;
        Ok(())
    }

    async fn get_legal_hold(&self, key: &str) -> Result<bool, BackendError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        self.count_lock(Req::Get);
        match self
            .client
            .get_object_legal_hold()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => {
                Ok(out.legal_hold().and_then(|h| h.status())
                    == Some(&ObjectLockLegalHoldStatus::On))
            }
            Err(e) => {
                let f = Failure::from_sdk(&e);
                if f.code.as_deref() == Some("NoSuchObjectLockConfiguration") {
                    return Ok(false);
                }
                Err(self.remote_error("GetObjectLegalHold", key, f))
            }
        }
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, BackendError> {
        let full = self.full_prefix(prefix)?;
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_object_versions()
                .bucket(&self.settings.bucket)
                .prefix(&full);
            if let Some(k) = &key_marker {
                req = req.key_marker(k);
            }
            if let Some(v) = &version_marker {
                req = req.version_id_marker(v);
            }
            let _permit = self.permit().await?;
            self.count_request(Req::List);
            let page = req.send().await.map_err(|e| {
                self.remote_error("ListObjectVersions", prefix, Failure::from_sdk(&e))
            })?;
            for v in page.versions() {
                if let (Some(key), Some(id)) = (v.key().and_then(|k| self.strip(k)), v.version_id())
                {
                    found.push(ObjectVersion {
                        key: key.to_string(),
                        version_id: id.to_string(),
                        delete_marker: false,
                    });
                }
            }
            for m in page.delete_markers() {
                if let (Some(key), Some(id)) = (m.key().and_then(|k| self.strip(k)), m.version_id())
                {
                    found.push(ObjectVersion {
                        key: key.to_string(),
                        version_id: id.to_string(),
                        delete_marker: true,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    async fn delete_version(
        &self,
        key: &str,
        version_id: &str,
        bypass_governance: bool,
    ) -> Result<(), BackendError> {
        let full = self.full_key(key)?;
        let id = ObjectIdentifier::builder()
            .key(full)
            .version_id(version_id)
            .build()
            .map_err(|e| self.internal(key, format!("building delete request: {e}")))?;
        let delete = Delete::builder()
            .objects(id)
            .quiet(true)
            .build()
            .map_err(|e| self.internal(key, format!("building delete request: {e}")))?;
        let mut req = self
            .client
            .delete_objects()
            .bucket(&self.settings.bucket)
            .delete(delete);
        if bypass_governance {
            req = req.bypass_governance_retention(true);
        }
        let _permit = self.permit().await?;
        self.count_request(Req::Post);
        let out = req
            .send()
            .await
            .map_err(|e| self.remote_error("DeleteObjects", key, Failure::from_sdk(&e)))?;
        if let Some(err) = out.errors().first() {
            return Err(BackendError::Remote {
                key: key.to_string(),
                message: format!(
                    "S3 delete of version {version_id} of {} refused: {} {}",
                    self.describe_key(key),
                    err.code().unwrap_or("?"),
                    err.message().unwrap_or("")
                ),
            });
        }
        Ok(())
    }

    async fn install_lifecycle(&self, rules: &LifecycleRules) -> Result<(), BackendError> {
        rules.validate().map_err(|why| BackendError::Unsupported {
            what: format!("lifecycle rules for {}: {why}", self.describe_key("")),
        })?;
        let id = self.rule_id();
        let mut all: Vec<LifecycleRule> = self
            .bucket_rules()
            .await?
            .into_iter()
            .filter(|r| r.id() != Some(id.as_str()))
            .collect();
        if !rules.is_empty() {
            all.push(self.build_rule(rules)?);
        }
        let _permit = self.permit().await?;
        if all.is_empty() {
            self.count_request(Req::Delete);
            self.client
                .delete_bucket_lifecycle()
                .bucket(&self.settings.bucket)
                .send()
                .await
                .map_err(|e| {
                    self.remote_error("DeleteBucketLifecycle", "", Failure::from_sdk(&e))
                })?;
            return Ok(());
        }
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(all))
            .build()
            .map_err(|e| self.internal("", format!("building lifecycle configuration: {e}")))?;
        self.count_request(Req::Put);
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(&self.settings.bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(|e| {
                self.remote_error("PutBucketLifecycleConfiguration", "", Failure::from_sdk(&e))
            })?;
        Ok(())
    }

    async fn lifecycle(&self) -> Result<LifecycleRules, BackendError> {
        let id = self.rule_id();
        let rules = self.bucket_rules().await?;
        let Some(rule) = rules.iter().find(|r| r.id() == Some(id.as_str())) else {
            return Ok(LifecycleRules::default());
        };
        let transition = rule.transitions().first();
        Ok(LifecycleRules {
            expire_noncurrent_after_days: rule
                .noncurrent_version_expiration()
                .and_then(|e| e.noncurrent_days())
                .map(|d| d.max(0) as u32),
            transition_after_days: transition.and_then(|t| t.days()).map(|d| d.max(0) as u32),
            transition_storage_class: transition
                .and_then(|t| t.storage_class())
                .map(|c| c.as_str().to_string()),
        })
    }

    fn lock_request_count(&self) -> u64 {
        self.lock_requests.load(Ordering::Relaxed)
    }
}
