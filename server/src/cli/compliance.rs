//! `pbs-cloud-server compliance-report`: prints a tenant's compliance report by asking the
//! running server's REST API (`GET /tenants/{id}/compliance-report`). Going through the API
//! leaves the datastores to the server that holds their writer lease, needs no S3 credentials
//! on the command line's side, and applies the same tenant and ACL checks as any client.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::Location;
use crate::net::pinned::pinned_client_config;
use crate::net::tls;

#[derive(Debug, clap::Args)]
pub struct ComplianceArgs {
    #[command(flatten)]
    pub location: Location,
    /// Tenant whose report is printed.
    #[arg(long)]
    pub tenant: String,
    /// Only this datastore.
    #[arg(long)]
    pub store: Option<String>,
    /// `json` or `csv`.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// The running server, `host:port`.
    #[arg(long, env = "PBS_CLOUD_SERVER", default_value = "127.0.0.1:8007")]
    pub server: String,
    /// User (`alice@pbs`) or API token (`alice@pbs!report`).
    #[arg(long, env = "PBS_AUTH_ID", default_value = "admin@pbs")]
    pub auth_id: String,
    /// Password or token secret; default: the data dir's generated admin password.
    #[arg(long, env = "PBS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Server certificate SHA-256 fingerprint; default: the one of the data dir's certificate.
    #[arg(long, env = "PBS_FINGERPRINT")]
    pub fingerprint: Option<String>,
}

pub fn run(args: ComplianceArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(fetch(&args))?;
    std::io::stdout().write_all(&body)?;
    Ok(())
}

async fn fetch(args: &ComplianceArgs) -> anyhow::Result<Bytes> {
    if args.format != "json" && args.format != "csv" {
        anyhow::bail!("--format must be json or csv");
    }
    let (config, data_dir) = args.location.resolve()?;
    let fingerprint = match &args.fingerprint {
        Some(f) => f.to_lowercase(),
        None => {
            tls::load_or_create(
                &data_dir.join("tls"),
                config.tls.cert.as_deref(),
                config.tls.key.as_deref(),
            )
            .context("no --fingerprint and no certificate in the data dir")?
            .fingerprint
        }
    };
    let password = match &args.password {
        Some(p) => p.clone(),
        None => std::fs::read_to_string(data_dir.join(super::serve::INITIAL_PASSWORD_FILE))
            .map(|p| p.trim().to_string())
            .context("no --password / PBS_PASSWORD and no generated admin password")?,
    };
    let client = Client {
        server: args.server.clone(),
        fingerprint,
    };
    let auth = match args.auth_id.contains('!') {
        true => (
            header::AUTHORIZATION,
            format!("PBSAPIToken={}:{password}", args.auth_id),
        ),
        false => {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("username", &args.auth_id)
                .append_pair("password", &password)
                .finish();
            let (status, body) = client
                .call("POST", "/api2/json/access/ticket", None, Bytes::from(form))
                .await?;
            if !status.is_success() {
                anyhow::bail!("login as {} failed ({status})", args.auth_id);
            }
            let json: serde_json::Value = serde_json::from_slice(&body)?;
            let ticket = json["data"]["ticket"]
                .as_str()
                .context("login answer has no ticket")?;
            let cookie: String = form_urlencoded::byte_serialize(ticket.as_bytes()).collect();
            (header::COOKIE, format!("PBSAuthCookie={cookie}"))
        }
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("format", &args.format);
    if let Some(store) = &args.store {
        query.append_pair("store", store);
    }
    let tenant: String = form_urlencoded::byte_serialize(args.tenant.as_bytes()).collect();
    let path = format!(
        "/api2/json/tenants/{tenant}/compliance-report?{}",
        query.finish()
    );
    let (status, body) = client
        .call("GET", &path, Some((auth.0, auth.1)), Bytes::new())
        .await?;
    if !status.is_success() {
        anyhow::bail!(
            "compliance report: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    if args.format == "json" {
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        let mut out = serde_json::to_vec_pretty(&json["data"])?;
        out.push(b'\n');
        return Ok(Bytes::from(out));
    }
    Ok(body)
}

struct Client {
    server: String,
    fingerprint: String,
}

impl Client {
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<(header::HeaderName, String)>,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let tcp = tokio::net::TcpStream::connect(&self.server)
            .await
            .with_context(|| format!("unable to connect to {}", self.server))?;
        let config = pinned_client_config(&self.fingerprint)?;
        let host = self
            .server
            .rsplit_once(':')
            .map_or(&*self.server, |(h, _)| h);
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|_| ServerName::try_from("localhost").expect("valid name"));
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {}", self.server))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.server);
        if method == "POST" {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        let req = req.body(Full::new(body))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
