//! Secrets of a tenant: generated credentials, the TLS key pair (self-signed or via
//! cert-manager) and the rendered config file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::ResourceExt;
use pbs_cloud_server::auth::{generate_secret, hash_password};

use super::{dns_names, owned_meta, Names, RenderError, CONFIG_KEY};
use crate::crd::Tenant;

/// Generated admin password and API token, with their argon2 hashes. The hashes are stored
/// next to the secrets so that re-rendering gives identical config bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub password: String,
    pub password_hash: String,
    pub token_name: String,
    pub token_secret: String,
    pub token_secret_hash: String,
}

const K_PASSWORD: &str = "password";
const K_PASSWORD_HASH: &str = "password-hash";
const K_TOKEN_NAME: &str = "token-name";
const K_TOKEN_SECRET: &str = "token-secret";
const K_TOKEN_HASH: &str = "token-secret-hash";

impl Credentials {
    /// Fresh random password and token secret.
    pub fn generate(tenant: &str) -> Result<Self, RenderError> {
        let err = |e: pbs_cloud_server::auth::AuthError| RenderError::Credentials {
            tenant: tenant.to_string(),
            message: e.to_string(),
        };
        let password = generate_secret().map_err(err)?;
        let token_secret = generate_secret().map_err(err)?;
        Ok(Credentials {
            password_hash: hash_password(&password).map_err(err)?,
            token_secret_hash: hash_password(&token_secret).map_err(err)?,
            password,
            token_name: "operator".into(),
            token_secret,
        })
    }

    /// Reads credentials back from the Secret written earlier; `None` when incomplete.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|s| !s.is_empty())
        };
        Some(Credentials {
            password: get(K_PASSWORD)?,
            password_hash: get(K_PASSWORD_HASH)?,
            token_name: get(K_TOKEN_NAME)?,
            token_secret: get(K_TOKEN_SECRET)?,
            token_secret_hash: get(K_TOKEN_HASH)?,
        })
    }

    /// Full token id of the admin's API token.
    pub fn tokenid(&self, userid: &str) -> String {
        format!("{userid}!{}", self.token_name)
    }
}

fn bytes(map: BTreeMap<&str, String>) -> BTreeMap<String, ByteString> {
    map.into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect()
}

/// The credentials Secret: password, token and the values a client needs.
pub fn credentials_secret(tenant: &Tenant, creds: &Credentials) -> Result<Secret, RenderError> {
    let names = Names::of(tenant);
    let admin = super::admin_user(tenant);
    Ok(Secret {
        metadata: owned_meta(tenant, &names.credentials)?,
        type_: Some("Opaque".into()),
        data: Some(bytes(BTreeMap::from([
            ("userid", admin.clone()),
            (K_PASSWORD, creds.password.clone()),
            (K_PASSWORD_HASH, creds.password_hash.clone()),
            (K_TOKEN_NAME, creds.token_name.clone()),
            ("tokenid", creds.tokenid(&admin)),
            (K_TOKEN_SECRET, creds.token_secret.clone()),
            (K_TOKEN_HASH, creds.token_secret_hash.clone()),
        ]))),
        ..Secret::default()
    })
}

/// The config Secret holding `config.toml`.
pub fn config_secret(tenant: &Tenant, config: &str) -> Result<Secret, RenderError> {
    Ok(Secret {
        metadata: owned_meta(tenant, &Names::of(tenant).config)?,
        type_: Some("Opaque".into()),
        data: Some(bytes(BTreeMap::from([(CONFIG_KEY, config.to_string())]))),
        ..Secret::default()
    })
}

/// A key of a Secret (`data`, else `stringData`), trimmed: how S3 credentials and CA bundles
/// that users provide are read.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
        })
        .map(|v| v.trim().to_string())
}

/// A PEM certificate and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsMaterial {
    /// Reads the pair back from a `kubernetes.io/tls` Secret.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Some(TlsMaterial {
            cert_pem: get("tls.crt")?,
            key_pem: get("tls.key")?,
        })
    }
}

/// A self-signed certificate for the tenant's DNS names (clients pin its fingerprint).
pub fn generate_self_signed(tenant: &Tenant) -> Result<TlsMaterial, RenderError> {
    let certified = rcgen::generate_simple_self_signed(dns_names(tenant)).map_err(|e| {
        RenderError::Certificate {
            tenant: tenant.name_any(),
            message: e.to_string(),
        }
    })?;
    Ok(TlsMaterial {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

/// SHA-256 fingerprint of the first certificate in `cert_pem`, as `aa:bb:...` (PBS's form).
pub fn fingerprint(tenant: &Tenant, cert_pem: &str) -> Result<String, RenderError> {
    let bad = |message: String| RenderError::BadCertificate {
        tenant: tenant.name_any(),
        message,
    };
    let mut reader = cert_pem.as_bytes();
    let der = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| bad("no certificate in tls.crt".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    Ok(digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The operator-managed TLS Secret (`kubernetes.io/tls`).
pub fn tls_secret(tenant: &Tenant, tls: &TlsMaterial) -> Result<Secret, RenderError> {
    Ok(Secret {
        metadata: owned_meta(tenant, &Names::of(tenant).tls)?,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(bytes(BTreeMap::from([
            ("tls.crt", tls.cert_pem.clone()),
            ("tls.key", tls.key_pem.clone()),
        ]))),
        ..Secret::default()
    })
}

/// A cert-manager `Certificate` writing the TLS Secret, when the Tenant asks for one.
pub fn certificate(tenant: &Tenant) -> Result<Option<DynamicObject>, RenderError> {
    let Some(cm) = tenant
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.cert_manager.as_ref())
    else {
        return Ok(None);
    };
    let names = Names::of(tenant);
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let mut obj = DynamicObject::new(&names.workload, &ApiResource::from_gvk(&gvk));
    obj.metadata = owned_meta(tenant, &names.workload)?;
    obj.data = serde_json::json!({
        "spec": {
            "secretName": names.tls,
            "dnsNames": dns_names(tenant),
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {"name": cm.issuer_name, "kind": cm.issuer_kind, "group": "cert-manager.io"},
        }
    });
    Ok(Some(obj))
}
