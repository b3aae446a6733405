//! TLS client configuration pinning the server certificate by fingerprint
//! (server/docs/protocol.md#certificate-fingerprint).
//!
//! Our test servers use self-signed certificates, so like the stock client we accept the
//! leaf only when SHA-256(leaf DER) equals the expected fingerprint. No ALPN is offered.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::{ClientError, Result};

/// Fingerprint of a DER certificate: SHA-256 as 32 lowercase hex pairs joined by `:`.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    colon_hex(digest.as_ref())
}

/// Renders bytes as lowercase hex pairs separated by `:` (fingerprint notation).
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises a user-given fingerprint (trim, lowercase) and checks its shape.
pub fn normalize_fingerprint(fp: &str) -> Result<String> {
    let fp = fp.trim().to_ascii_lowercase();
    let ok = fp.len() == 95
        && fp.split(':').count() == 32
        && fp
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(fp)
    } else {
        Err(ClientError::Input(format!(
            "fingerprint '{fp}' is not 32 colon-separated hex bytes"
        )))
    }
}

#[derive(Debug)]
struct FingerprintVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_of_der(end_entity.as_ref());
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint mismatch: expected {}, got {got}",
                self.expected
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds a rustls client config (ring provider, TLS 1.2+1.3, no ALPN) that accepts exactly
/// the certificate whose fingerprint is `expected_fingerprint`.
pub fn client_config(expected_fingerprint: &str) -> Result<Arc<ClientConfig>> {
    let expected = normalize_fingerprint(expected_fingerprint)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(FingerprintVerifier {
        expected,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(format!("protocol versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Server name for SNI/verification: IP literals become `IpAddress` (no SNI sent).
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string())
        .map_err(|e| ClientError::Input(format!("invalid server name '{host}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint_of_der(b"abc");
        assert!(fp.starts_with("ba:78:16:bf:8f:01:cf:ea"), "{fp}");
        assert_eq!(fp.len(), 95);
        assert_eq!(normalize_fingerprint(&fp.to_uppercase()).unwrap(), fp);
        assert!(normalize_fingerprint("ab:cd").is_err());
    }

    async fn handshake_with(expected: &str) -> Result<(), String> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(|e| e.to_string())?;
        let cert_der = ck.cert.der().clone();
        let key_der =
            rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let fp_real = fingerprint_of_der(cert_der.as_ref());
        let expected = if expected == "real" {
            fp_real
        } else {
            expected.to_string()
        };
        let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        let cfg = client_config(&expected).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let name = server_name("127.0.0.1").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        server.abort();
        assert_eq!(buf, b"ok");
        Ok(())
    }

    #[tokio::test]
    async fn pinned_fingerprint_accepts_and_rejects() {
        handshake_with("real")
            .await
            .expect("matching fingerprint must be accepted");
        let wrong = colon_hex(&[0x11; 32]);
        let err = handshake_with(&wrong)
            .await
            .expect_err("wrong fingerprint must fail");
        assert!(err.contains("fingerprint mismatch"), "{err}");
    }
}
