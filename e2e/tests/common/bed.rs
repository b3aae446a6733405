//! A test bed for crash and fencing tests: a server (local or S3 datastore) with finished
//! snapshots whose content the test knows, and checks that all of them still restore.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pbs_cloud_e2e::{Crypt, PbsClient, TestServer};
use pbs_cloud_server::backend::s3::{ConditionalWrites, S3Credentials, S3Settings};
use pbs_cloud_server::backend::{Backend, LocalBackend, PutOptions, S3Backend};

use super::*;

pub const MIB: usize = 1024 * 1024;
/// How long a fault point may take to be reached.
pub const REACH: Duration = Duration::from_secs(300);

/// Where the datastore lives, seen from the test.
pub enum Store {
    Local(PathBuf),
    S3 {
        backend: Arc<S3Backend>,
        config: PathBuf,
    },
}

impl Store {
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Store::Local(root) => std::fs::read(root.join(key)).ok(),
            Store::S3 { backend, .. } => backend.get(key).await.ok().map(|b| b.to_vec()),
        }
    }

    /// A backend client of the datastore (for what the server's API does not do).
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Store::Local(root) => Arc::new(LocalBackend::open(root).expect("open the datastore")),
            Store::S3 { backend, .. } => backend.clone(),
        }
    }

    /// Every object key of the datastore except the writer lease's, sorted.
    pub async fn keys_outside_lease(&self) -> Vec<String> {
        let listed = self
            .backend()
            .list("", None)
            .await
            .expect("list the datastore");
        let mut keys: Vec<String> = listed
            .objects
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.starts_with(".lease"))
            .collect();
        keys.sort();
        keys
    }

    pub async fn put(&self, key: &str, data: Vec<u8>) {
        match self {
            Store::Local(root) => std::fs::write(root.join(key), data).unwrap(),
            Store::S3 { backend, .. } => {
                backend
                    .put(key, Bytes::from(data), PutOptions::default())
                    .await
                    .unwrap();
            }
        }
    }
}

/// A server with finished snapshots whose content the test knows.
pub struct Bed {
    pub server: TestServer,
    pub store: Store,
    pub good: GoodSnapshot,
    /// Finished image snapshots: `(backup id, time, image)`.
    pub images: Vec<(String, i64, Vec<u8>)>,
}

impl Bed {
    pub async fn local() -> Bed {
        let (server, client) = start_server().await;
        let root = server.data_dir().join("datastores").join(server.store());
        Self::with_snapshots(server, client, Store::Local(root)).await
    }

    pub async fn s3(name: &str) -> Bed {
        let s3 = s3_env();
        let prefix = format!("t/kill-{name}-{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut server = TestServer::prepare().unwrap();
        let secret = server.data_dir().join("s3-secret");
        std::fs::write(&secret, format!("{}\n", s3.secret_key)).unwrap();
        server
            .set_config(&format!(
                "[[datastore]]\nname = \"store1\"\n\
                 [datastore.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\n\
                 region = \"us-east-1\"\npath_style = true\naccess_key_id = \"{}\"\n\
                 secret_access_key_file = \"{}\"\n",
                s3.bucket,
                s3.endpoint,
                s3.access_key,
                secret.display(),
            ))
            .unwrap();
        server.launch().await.expect("server with an S3 datastore");
        let mut settings = S3Settings::new(
            &s3.bucket,
            &prefix,
            S3Credentials::Static {
                access_key_id: s3.access_key.clone(),
                secret_access_key: s3.secret_key.clone(),
            },
        );
        settings.endpoint = Some(s3.endpoint.clone());
        settings.path_style = true;
        settings.conditional_writes = ConditionalWrites::On;
        let backend = Arc::new(S3Backend::connect(settings).await.expect("S3 test client"));
        let client = server.admin_client().await.unwrap();
        let config = server.data_dir().join("server.toml");
        Self::with_snapshots(server, client, Store::S3 { backend, config }).await
    }

    pub async fn with_snapshots(server: TestServer, client: PbsClient, store: Store) -> Bed {
        let good = make_good_snapshot(&client, server.store()).await;
        let mut bed = Bed {
            server,
            store,
            good,
            images: Vec::new(),
        };
        bed.add_image("base", T0, 1, 2 * MIB + 5).await;
        bed
    }

    /// Removes the test's S3 prefix (nothing to do for a local datastore).
    pub async fn cleanup(self) {
        if let Store::S3 { backend, .. } = &self.store {
            backend
                .delete_prefix("")
                .await
                .expect("remove the test prefix");
        }
    }

    pub async fn client(&self) -> PbsClient {
        self.server.admin_client().await.expect("admin login")
    }

    pub fn name(&self) -> String {
        self.server.store().to_string()
    }

    /// Backs up a new image snapshot and remembers it as finished.
    pub async fn add_image(&mut self, id: &str, time: i64, seed: u64, len: usize) {
        let image = random_bytes(seed, len);
        backup_image(&self.client().await, &self.name(), id, time, &image)
            .await
            .unwrap_or_else(|e| panic!("backup of host/{id}: {e}"));
        self.images.push((id.to_string(), time, image));
    }

    /// Clean stop, then a start with the fault injection `env` (a point, optionally a key
    /// prefix and which hit).
    pub async fn relaunch_with(&mut self, env: &[(&str, &str)]) {
        self.server.shutdown().await.expect("clean stop");
        for (k, v) in env {
            self.server.set_env(k, v);
        }
        self.server.launch().await.unwrap();
    }

    /// SIGKILL as soon as the server stopped at `point`.
    pub async fn kill_at(&mut self, point: &str) {
        let line = self
            .server
            .wait_for_output(&format!("FAULT-PAUSE {point}"), REACH)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("killing the server at: {line}");
        self.server.stop().await;
    }

    /// Starts again without fault injection.
    pub async fn recover(&mut self) {
        self.server.clear_env();
        self.server.launch().await.unwrap();
    }

    /// Every finished snapshot restores byte-identical (and is listed as finished).
    pub async fn assert_finished_restore(&self) {
        let client = self.client().await;
        let store = self.name();
        assert_good_snapshot_intact(&client, &store, &self.good).await;
        for (id, time, image) in &self.images {
            let listed = snapshots(&client, &store, None, id).await;
            assert!(
                listed.iter().any(|s| s["backup-time"] == *time),
                "host/{id}/{time} listed: {listed:?}"
            );
            let session = reader(&client, &store, None, id, *time, None)
                .await
                .unwrap_or_else(|e| panic!("reader on host/{id}/{time}: {e}"));
            let restored = session.restore_archive("disk.img").await.unwrap();
            assert!(
                restored == *image,
                "host/{id}/{time} restores byte-identical"
            );
        }
    }

    /// GC completes, then a new backup succeeds and restores; everything else still does.
    pub async fn assert_gc_and_backup(&mut self, id: &str, seed: u64) {
        let client = self.client().await;
        let upid = client
            .post(&format!("admin/datastore/{}/gc", self.name()), None)
            .await
            .unwrap();
        let (status, log) = wait_task_long(&client, upid.as_str().unwrap()).await;
        assert_eq!(status["exitstatus"], "OK", "GC after the kill: {log:#?}");
        self.add_image(id, T0 + 1000 + seed as i64, seed, 3 * MIB + 7)
            .await;
        self.assert_finished_restore().await;
    }
}

pub async fn backup_image(
    client: &PbsClient,
    store: &str,
    id: &str,
    time: i64,
    image: &[u8],
) -> pbs_cloud_e2e::Result<pbs_cloud_e2e::BackupSummary> {
    let content = Content {
        tree: None,
        image: Some(image),
        conf: None,
    };
    backup(client, store, None, id, time, Crypt::None, &content).await
}

/// Runs `op` in the background on a fresh client (it never completes: the server is killed).
pub fn in_background<F, Fut>(server: &TestServer, op: F) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(PbsClient, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let host = server.host().to_string();
    let port = server.port();
    let fp = server.fingerprint.clone();
    let (user, password) = (server.auth_id().to_string(), server.password.clone());
    let store = server.store().to_string();
    tokio::spawn(async move {
        let client = PbsClient::connect(&host, port, &fp).await.unwrap();
        client.login(&user, &password).await.unwrap();
        op(client, store).await
    })
}

/// A PBS-layout source directory with two snapshots (from a local server), and their images.
pub async fn import_source() -> (TestServer, PathBuf, Vec<(String, i64, Vec<u8>)>) {
    let (mut source, client) = start_server().await;
    let mut images = Vec::new();
    for (i, id) in ["imp-a", "imp-b"].into_iter().enumerate() {
        let image = random_bytes(900 + i as u64, 2 * MIB + i);
        backup_image(&client, "store1", id, T0, &image)
            .await
            .unwrap();
        images.push((id.to_string(), T0, image));
    }
    source.shutdown().await.unwrap();
    let dir = source.data_dir().join("datastores").join("store1");
    (source, dir, images)
}

/// `pbs-cloud-server import` of `from` into the bed's datastore, with `env`.
pub fn import_command(bed: &Bed, from: &Path, env: &[(&str, &str)]) -> tokio::process::Command {
    let bin = pbs_cloud_e2e::server::server_binary().expect("server binary");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("import")
        .arg("--from")
        .arg(from)
        .arg("--data-dir")
        .arg(bed.server.data_dir())
        .arg("--store")
        .arg("store1");
    if let Store::S3 { config, .. } = &bed.store {
        cmd.arg("--to-config").arg(config);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    cmd
}
