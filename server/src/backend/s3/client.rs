//! Building the aws-sdk-s3 client: rustls with ring, optional extra CA bundle, credentials,
//! timeouts and retries, and the checksum settings real S3 servers need.
//!
//! SDK defaults that break real servers (docs/design.md#s3-client-settings): request checksums are
//! computed only when an operation requires them, and response checksums are validated only when
//! required. The body's SHA-256, which we compute once per upload anyway, is sent both as
//! `x-amz-checksum-sha256` (the store checks the bytes) and as the precomputed SigV4 payload hash
//! (so the signer does not hash the body a second time).
//!
//! The SDK's stalled-stream protection is off: it cuts a request when no byte moves for 5 s,
//! and a busy store legitimately sends nothing for longer (RGW takes about 7 s to answer a
//! 1000-key DeleteObjects in a bucket of a million objects). Every attempt is bounded by the
//! configured `request_timeout` instead.

use std::time::Duration;

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::{S3Credentials, S3Settings};
use crate::backend::BackendError;

/// Connect timeout; the per-request timeout is configurable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; the SDK doubles it (with jitter) per attempt.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Upper bound of one retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Builds the SDK client for `settings`.
pub(crate) async fn build(settings: &S3Settings) -> Result<aws_sdk_s3::Client, BackendError> {
    let setup_err = |message: String| BackendError::Internal {
        key: format!("s3://{}", settings.bucket),
        message,
    };
    let mut trust = TrustStore::default();
    if let Some(pem) = &settings.ca_bundle_pem {
        trust = trust.with_pem_certificate(pem.clone());
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| setup_err(format!("invalid CA bundle: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();

    let region = Region::new(settings.region.clone());
    let credentials: SharedCredentialsProvider = match &settings.credentials {
        S3Credentials::Static {
            access_key_id,
            secret_access_key,
        } => SharedCredentialsProvider::new(Credentials::new(
            access_key_id.clone(),
            secret_access_key.clone(),
            None,
            None,
            "pbs-cloud-config",
        )),
        S3Credentials::Env => SharedCredentialsProvider::new(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        ),
        S3Credentials::DefaultChain => {
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .region(region.clone())
                .http_client(http.clone())
                .load()
                .await;
            shared.credentials_provider().ok_or_else(|| {
                setup_err("the SDK's default credential chain found no provider".to_string())
            })?
        }
    };

    let retry = RetryConfig::standard()
        .with_max_attempts(settings.max_retries.saturating_add(1).max(1))
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(settings.request_timeout)
        .build();
    let mut builder = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .http_client(http)
        .force_path_style(settings.path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(retry)
        .timeout_config(timeouts)
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint.clone());
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

/// Tells the SigV4 signer the body's SHA-256 (lowercase hex) so it does not hash it again.
#[derive(Debug)]
pub(super) struct PrecomputedPayloadHash(pub String);

impl Intercept for PrecomputedPayloadHash {
    fn name(&self) -> &'static str {
        "PrecomputedPayloadHash"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}
