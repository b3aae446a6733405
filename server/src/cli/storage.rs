//! Where each datastore's objects live: a local directory or an S3 bucket prefix, from the
//! config file (`[datastore.s3]`, the seed's `[storage]`) or the environment quick start
//! (`PBS_CLOUD_BUCKET`, `PBS_CLOUD_ENDPOINT`, `PBS_CLOUD_PREFIX`, `AWS_REGION`, `AWS_*` keys).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::backend::s3::{ConditionalWrites, S3Credentials, S3Settings};
use crate::backend::{Backend, LocalBackend, S3Backend};
use crate::config::{S3Config, StorageConfig};

/// A datastore's backend before it is opened.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Local(PathBuf),
    S3(Box<S3Settings>),
}

impl StoreLocation {
    /// For log lines: the directory, or `s3://bucket/prefix at endpoint`.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Local(path) => path.display().to_string(),
            StoreLocation::S3(s) => format!(
                "s3://{}/{} at {}",
                s.bucket,
                s.prefix,
                s.endpoint.as_deref().unwrap_or("AWS S3")
            ),
        }
    }

    /// Open the backend; S3 checks the bucket and credentials here (clear error at start).
    pub async fn open(&self, name: &str) -> anyhow::Result<Arc<dyn Backend>> {
        match self {
            StoreLocation::Local(path) => {
                let backend = LocalBackend::open(path).with_context(|| {
                    format!("datastore '{name}': unable to open {}", path.display())
                })?;
                Ok(Arc::new(backend))
            }
            StoreLocation::S3(settings) => {
                let backend = S3Backend::connect((**settings).clone())
                    .await
                    .with_context(|| format!("datastore '{name}': unable to open S3 storage"))?;
                Ok(Arc::new(backend))
            }
        }
    }
}

/// `[datastore.s3]` → settings (reads the secret file).
pub fn settings_from_s3_config(s3: &S3Config) -> anyhow::Result<S3Settings> {
    let credentials = match (&s3.access_key_id, &s3.secret_access_key_file) {
        (Some(id), Some(file)) => S3Credentials::Static {
            access_key_id: id.clone(),
            secret_access_key: read_secret(file)?,
        },
        _ => match s3.credentials.as_ref().map(|c| c.get_ref().as_str()) {
            Some("env") => S3Credentials::Env,
            _ => S3Credentials::DefaultChain,
        },
    };
    let mut settings = S3Settings::new(s3.bucket.get_ref(), &s3.prefix, credentials);
    settings.endpoint = s3.endpoint.clone();
    if let Some(region) = &s3.region {
        settings.region = region.clone();
    }
    settings.path_style = s3.path_style;
    settings.storage_class = s3.storage_class.as_ref().map(|c| c.get_ref().clone());
    settings.sse = s3.sse.as_ref().map(|c| c.get_ref().clone());
    settings.sse_kms_key_id = s3.sse_kms_key_id.clone();
    if let Some(path) = &s3.ca_bundle {
        settings.ca_bundle_pem = Some(
            std::fs::read(path)
                .with_context(|| format!("unable to read CA bundle {}", path.display()))?,
        );
    }
    if let Some(secs) = s3.request_timeout_secs {
        settings.request_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(retries) = s3.max_retries {
        settings.max_retries = retries;
    }
    if let Some(n) = s3.max_concurrency {
        settings.max_concurrency = n.max(1);
    }
    if let Some(mode) = &s3.conditional_writes {
        settings.conditional_writes = ConditionalWrites::parse(mode.get_ref())
            .with_context(|| format!("invalid conditional_writes '{}'", mode.get_ref()))?;
    }
    if let Some(secs) = s3.health_check_secs {
        settings.health_interval = Duration::from_secs(secs);
    }
    Ok(settings)
}

/// The seed's `[storage]` section for the default datastore.
pub fn location_from_storage(
    storage: &StorageConfig,
    default_path: &Path,
) -> anyhow::Result<StoreLocation> {
    match storage.kind.get_ref().as_str() {
        "s3" => {
            let bucket = storage
                .bucket
                .as_ref()
                .map(|b| b.get_ref().clone())
                .context("storage.bucket is required for type = \"s3\"")?;
            let mut settings = S3Settings::new(&bucket, &storage.prefix, env_credentials());
            settings.endpoint = storage.endpoint.clone();
            if let Some(region) = storage.region.clone().or_else(env_region) {
                settings.region = region;
            }
            settings.path_style = storage.path_style;
            Ok(StoreLocation::S3(Box::new(settings)))
        }
        _ => Ok(StoreLocation::Local(
            storage
                .path
                .clone()
                .unwrap_or_else(|| default_path.to_path_buf()),
        )),
    }
}

/// The environment quick start: `PBS_CLOUD_BUCKET` set → the default datastore lives there.
/// A custom endpoint implies path-style addressing (MinIO, Ceph, Garage on an IP address)
/// unless `PBS_CLOUD_PATH_STYLE=false`.
pub fn location_from_env() -> Option<StoreLocation> {
    let bucket = env_nonempty("PBS_CLOUD_BUCKET")?;
    let prefix = env_nonempty("PBS_CLOUD_PREFIX").unwrap_or_default();
    let mut settings = S3Settings::new(&bucket, &prefix, env_credentials());
    settings.endpoint = env_nonempty("PBS_CLOUD_ENDPOINT");
    if let Some(region) = env_region() {
        settings.region = region;
    }
    settings.path_style = match env_nonempty("PBS_CLOUD_PATH_STYLE").as_deref() {
        Some("false") | Some("0") | Some("no") => false,
        Some(_) => true,
        None => settings.endpoint.is_some(),
    };
    Some(StoreLocation::S3(Box::new(settings)))
}

/// Keys from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` when set, else the SDK's chain.
fn env_credentials() -> S3Credentials {
    if env_nonempty("AWS_ACCESS_KEY_ID").is_some() {
        S3Credentials::Env
    } else {
        S3Credentials::DefaultChain
    }
}

fn env_region() -> Option<String> {
    env_nonempty("AWS_REGION").or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("unable to read secret access key file {}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        anyhow::bail!("secret access key file {} is empty", path.display());
    }
    Ok(secret)
}
