//! TLS for the listener (docs/design.md#tls): a provided certificate, or a self-signed one made
//! on first start and kept in the data dir. Clients pin the leaf's SHA-256 fingerprint
//! (docs/protocol.md#certificate-fingerprint), which is printed at start in their format.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up; each variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("unable to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("unable to generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key in {cert} / {key} are not usable: {source}")]
    Rustls {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The server's TLS configuration and the fingerprint clients pin.
pub struct TlsSetup {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, colon-separated lowercase hex.
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

/// Uses `cert`/`key` when both are given, otherwise `<dir>/proxy.pem` and `<dir>/proxy.key`,
/// generating them when missing.
pub fn load_or_create(
    dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsSetup, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf()),
        _ => {
            let cert_path = dir.join("proxy.pem");
            let key_path = dir.join("proxy.key");
            if !cert_path.exists() || !key_path.exists() {
                generate_self_signed(dir, &cert_path, &key_path)?;
            }
            (cert_path, key_path)
        }
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = fingerprint_of(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_err = |source| TlsError::Rustls {
        cert: cert_path.clone(),
        key: key_path.clone(),
        source,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_err)?;
    Ok(TlsSetup {
        config: Arc::new(config),
        fingerprint,
        cert_path,
    })
}

/// SHA-256 over the DER bytes, as `ab:cd:…`.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn generate_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(write_err(dir))?;
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !hostname.is_empty() && hostname != "localhost" {
        names.push(hostname);
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pbs-cloud-server");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "PBS Cloud self-signed");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    crate::backend::local::write_private_file(key_path, key.serialize_pem().as_bytes())
        .map_err(write_err(key_path))?;
    crate::backend::local::write_private_file(cert_path, cert.pem().as_bytes())
        .map_err(write_err(cert_path))?;
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), None, None).unwrap();
        assert_eq!(first.fingerprint.len(), 95);
        let mode = fs::metadata(dir.path().join("proxy.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path(), None, None).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
    }

    #[test]
    fn broken_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        load_or_create(dir.path(), None, None).unwrap();
        fs::copy(dir.path().join("proxy.pem"), &cert).unwrap();
        fs::write(&key, "garbage").unwrap();
        let err = load_or_create(dir.path(), Some(&cert), Some(&key))
            .err()
            .unwrap();
        assert!(err.to_string().contains("k.pem"), "{err}");
    }
}
