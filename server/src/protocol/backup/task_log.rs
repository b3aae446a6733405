//! Lines a backup session writes into its task log, in PBS's wording: every closed index gets
//! its upload statistics, so `task log <UPID>` shows how much of an archive was new.

use crate::format::{digest_to_hex, Digest};

use super::session::UploadStats;

/// The statistics block PBS logs when an index is closed. `chunk_count` is the number of
/// index entries; uploads beyond it (a reused all-zero chunk) are not counted as duplicates.
pub fn upload_statistics(
    archive: &str,
    uuid: &[u8; 16],
    csum: &Digest,
    size: u64,
    chunk_count: u64,
    stats: &UploadStats,
) -> Vec<String> {
    let mut lines = vec![
        format!("Upload statistics for '{archive}'"),
        format!("UUID: {}", hex::encode(uuid)),
        format!("Checksum: {}", digest_to_hex(csum)),
        format!("Size: {size}"),
        format!("Chunk count: {chunk_count}"),
    ];
    if size == 0 || chunk_count == 0 {
        return lines;
    }
    lines.push(format!(
        "Upload size: {} ({}%)",
        stats.size,
        stats.size * 100 / size
    ));
    let client_side = chunk_count.saturating_sub(stats.count);
    let server_side = stats.duplicates;
    if client_side + server_side > 0 {
        lines.push(format!(
            "Duplicates: {client_side}+{server_side} ({}%)",
            (client_side + server_side) * 100 / chunk_count
        ));
    }
    if let Some(percent) = (stats.compressed_size * 100).checked_div(stats.size) {
        lines.push(format!("Compression: {percent}%"));
    }
    lines
}

/// The uuid in an index file's header (bytes 8..24, after the magic).
pub fn index_uuid(index: &[u8]) -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if let Some(bytes) = index.get(8..24) {
        uuid.copy_from_slice(bytes);
    }
    uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_partly_reused_archive() {
        let stats = UploadStats {
            count: 3,
            size: 300,
            compressed_size: 150,
            duplicates: 1,
        };
        let lines = upload_statistics("root.pxar.didx", &[0xab; 16], &[1; 32], 1000, 5, &stats);
        assert_eq!(
            lines,
            vec![
                "Upload statistics for 'root.pxar.didx'".to_string(),
                format!("UUID: {}", "ab".repeat(16)),
                format!("Checksum: {}", "01".repeat(32)),
                "Size: 1000".to_string(),
                "Chunk count: 5".to_string(),
                "Upload size: 300 (30%)".to_string(),
                "Duplicates: 2+1 (60%)".to_string(),
                "Compression: 50%".to_string(),
            ]
        );
    }

    #[test]
    fn empty_and_fully_new_archives() {
        let none = UploadStats::default();
        assert_eq!(
            upload_statistics("a.fidx", &[0; 16], &[0; 32], 0, 0, &none).len(),
            5
        );
        let new = UploadStats {
            count: 2,
            size: 10,
            compressed_size: 10,
            duplicates: 0,
        };
        let lines = upload_statistics("a.fidx", &[0; 16], &[0; 32], 10, 2, &new);
        assert!(!lines.iter().any(|l| l.starts_with("Duplicates")));
        assert_eq!(lines.last().unwrap(), "Compression: 100%");
        let mut index = vec![0u8; 64];
        index[8..24].copy_from_slice(&[5; 16]);
        assert_eq!(index_uuid(&index), [5; 16]);
        assert_eq!(index_uuid(&[1, 2]), [0; 16]);
    }
}
