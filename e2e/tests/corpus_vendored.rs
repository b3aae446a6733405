//! The repository carries its own copy of the wire corpus (`e2e/corpus/`). These tests check
//! that every vendored file follows the line schema and, in a checkout that has the shared
//! original beside it (`../shared/pbs/corpus/`), that the copy is complete and unchanged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pbs_cloud_e2e::corpus;

const REFRESH: &str = "refresh the copy with `cp ../shared/pbs/corpus/*.jsonl \
     ../shared/pbs/corpus/*.meta.json e2e/corpus/` (from the repository root) and re-run the \
     corpus replay";

/// `*.jsonl` and `*.meta.json` file names in `dir`.
fn corpus_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl") || n.ends_with(".meta.json"))
        .collect()
}

#[test]
fn vendored_files_follow_the_schema() {
    let dir = corpus::corpus_dir();
    let names = corpus::scenario_names(&dir).unwrap();
    assert!(
        names.len() >= 26,
        "e2e/corpus holds {} scenario files, expected the 26 recorded ones",
        names.len()
    );
    let files = corpus_files(&dir);
    let mut exchanges = 0;
    for name in &names {
        assert!(
            files.contains(&format!("{name}.meta.json")),
            "{name}.jsonl has no {name}.meta.json"
        );
        let sc = corpus::load(&dir, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(!sc.exchanges.is_empty(), "{name} has no exchanges");
        exchanges += sc.exchanges.len();
    }
    // 166 (client 3.2.4) + 212 (client 4.2.3) + 399 (server 4.2.3) recorded exchanges
    assert_eq!(exchanges, 777, "exchange count of the vendored corpus");
    for f in &files {
        if let Some(stem) = f.strip_suffix(".meta.json") {
            assert!(names.iter().any(|n| n == stem), "{f} has no {stem}.jsonl");
        }
    }
    assert!(
        dir.join("README.md").is_file(),
        "e2e/corpus/README.md is missing"
    );
}

/// The shared original, when this checkout has one beside it.
fn shared_corpus() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("../shared/pbs/corpus");
    dir.is_dir().then_some(dir)
}

#[test]
fn vendored_copy_equals_the_shared_original() {
    let Some(shared) = shared_corpus() else {
        // No original here (a user's clone): the schema test above checks the copy itself.
        // Still prove the copy is self-consistent instead of passing on nothing.
        let dir = corpus::corpus_dir();
        for name in corpus::scenario_names(&dir).unwrap() {
            corpus::load(&dir, &name).unwrap_or_else(|e| panic!("{e}"));
        }
        return;
    };
    let ours = corpus::corpus_dir();
    let theirs = corpus_files(&shared);
    let mine = corpus_files(&ours);
    let missing: Vec<&String> = theirs.difference(&mine).collect();
    let extra: Vec<&String> = mine.difference(&theirs).collect();
    let changed: Vec<&String> = theirs
        .intersection(&mine)
        .filter(|f| std::fs::read(shared.join(f)).unwrap() != std::fs::read(ours.join(f)).unwrap())
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && changed.is_empty(),
        "e2e/corpus differs from {}: missing {missing:?}, not in the original {extra:?}, \
         changed {changed:?}; {REFRESH}",
        shared.display()
    );
}
