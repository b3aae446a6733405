//! Wire tests of fixed indexes: a full image backup, then an incremental (`reuse-csum`) one.

use super::*;

/// Uploads `data` as a fixed chunk for writer `wid`.
async fn upload_fixed_chunk(h2: &mut SendRequest<Full<Bytes>>, wid: u64, data: &[u8]) -> String {
    let hex = digest_to_hex(&sha256(data));
    let blob = encode_blob(data, true);
    let path = format!(
        "/fixed_chunk?wid={wid}&digest={hex}&size={}&encoded-size={}",
        data.len(),
        blob.len()
    );
    let (status, body) = call(
        h2,
        Method::POST,
        &path,
        "application/octet-stream",
        Bytes::from(blob),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    hex
}

async fn upload_manifest_and_finish(h2: &mut SendRequest<Full<Bytes>>, time: i64) {
    let blob = Manifest::new("vm", "100", time).to_blob();
    let path = format!(
        "/blob?file-name=index.json.blob&encoded-size={}",
        blob.len()
    );
    let (status, _) = call(
        h2,
        Method::POST,
        &path,
        "application/octet-stream",
        Bytes::from(blob),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    json_call(h2, Method::POST, "/finish", None).await.unwrap();
}

#[tokio::test]
async fn fixed_index_full_then_incremental() {
    const CS: usize = 4 * 1024 * 1024;
    let fx = fixture().await;
    let vm_query = |t: i64| {
        format!(
            "store=store1&backup-type=vm&backup-id=100&backup-time={t}&debug=false&benchmark=false"
        )
    };
    let size = CS + 5;
    let block0 = vec![0u8; CS];
    let tail = b"tail!".to_vec();

    let mut h2 = connect(
        fx.addr,
        "/api2/json/backup",
        BACKUP_PROTOCOL_ID,
        &vm_query(1000),
    )
    .await
    .unwrap();
    let wid = json_call(
        &mut h2,
        Method::POST,
        &format!("/fixed_index?archive-name=drive-scsi0.img.fidx&size={size}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(wid, json!(1));
    let d0 = upload_fixed_chunk(&mut h2, 1, &block0).await;
    let d1 = upload_fixed_chunk(&mut h2, 1, &tail).await;
    // At most one short chunk per fixed writer.
    let blob = encode_blob(b"x", false);
    let path = format!(
        "/fixed_chunk?wid=1&digest={}&size=1&encoded-size={}",
        digest_to_hex(&sha256(b"x")),
        blob.len()
    );
    let (status, body) = call(
        &mut h2,
        Method::POST,
        &path,
        "application/octet-stream",
        Bytes::from(blob),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("detected multiple end chunks"));
    let append = json!({"wid": 1, "digest-list": [d1, d0], "offset-list": [CS, 0]});
    json_call(&mut h2, Method::PUT, "/fixed_index", Some(append))
        .await
        .unwrap();
    let mut all = Vec::new();
    all.extend_from_slice(&sha256(&block0));
    all.extend_from_slice(&sha256(&tail));
    let csum = digest_to_hex(&sha256(&all));
    let close = format!("/fixed_close?wid=1&chunk-count=2&size={size}&csum={csum}");
    json_call(&mut h2, Method::POST, &close, None)
        .await
        .unwrap();
    upload_manifest_and_finish(&mut h2, 1000).await;

    // Incremental run: only block 0 changed.
    let mut h2 = connect(
        fx.addr,
        "/api2/json/backup",
        BACKUP_PROTOCOL_ID,
        &vm_query(2000),
    )
    .await
    .unwrap();
    let bad = format!(
        "/fixed_index?archive-name=drive-scsi0.img.fidx&size={size}&reuse-csum={}",
        "0".repeat(64)
    );
    let err = json_call(&mut h2, Method::POST, &bad, None)
        .await
        .unwrap_err();
    assert!(err.1.contains("doesn't match last backup's"), "{}", err.1);
    let path =
        format!("/fixed_index?archive-name=drive-scsi0.img.fidx&size={size}&reuse-csum={csum}");
    let wid = json_call(&mut h2, Method::POST, &path, None).await.unwrap();
    assert_eq!(wid, json!(1), "a refused writer does not use up a wid");
    let mut changed = block0.clone();
    changed[0] = 1;
    let dc = upload_fixed_chunk(&mut h2, 1, &changed).await;
    let append = json!({"wid": 1, "digest-list": [dc], "offset-list": [0]});
    json_call(&mut h2, Method::PUT, "/fixed_index", Some(append))
        .await
        .unwrap();
    let mut all = Vec::new();
    all.extend_from_slice(&sha256(&changed));
    all.extend_from_slice(&sha256(&tail));
    let csum2 = digest_to_hex(&sha256(&all));
    // QEMU sends the bytes it wrote as size; not checked for incremental writers.
    let close = format!("/fixed_close?wid=1&chunk-count=1&size={CS}&csum={csum2}");
    json_call(&mut h2, Method::POST, &close, None)
        .await
        .unwrap();
    upload_manifest_and_finish(&mut h2, 2000).await;

    let dir = BackupDir::new(BackupGroup::new(BackupType::Vm, "100").unwrap(), 2000).unwrap();
    let bytes = fx
        .store
        .tree()
        .read_snapshot_file(&BackupNamespace::root(), &dir, "drive-scsi0.img.fidx")
        .await
        .unwrap();
    let index = crate::format::fixed_index::FixedIndex::parse(&bytes).unwrap();
    assert_eq!(index.size, size as u64);
    assert_eq!(digest_to_hex(&index.csum()), csum2);
}
