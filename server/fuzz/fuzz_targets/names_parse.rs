//! Name validation must never panic and must never accept a path trick.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::names::{
    check_archive_name, is_safe_id, parse_backup_time, BackupGroup, BackupNamespace, BackupType,
};

fn no_tricks(s: &str) {
    assert!(!s.contains('/') && !s.starts_with('.') && !s.is_empty() && !s.contains('\0'));
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if is_safe_id(s) {
        no_tricks(s);
    }
    if check_archive_name(s).is_ok() {
        no_tricks(s);
    }
    if let Ok(g) = BackupGroup::new(BackupType::Vm, s) {
        no_tricks(&g.id);
    }
    if let Ok(ns) = BackupNamespace::parse(s) {
        assert!(ns.depth() <= 7);
        assert_eq!(ns.display_path(), s);
        for c in ns.components() {
            no_tricks(c);
        }
    }
    if let Ok(t) = parse_backup_time(s) {
        assert_eq!(
            pbs_cloud_server::format::names::format_backup_time(t).unwrap(),
            s
        );
    }
});
