//! Writes the CRD YAML of every kind into `crds/` and `charts/pbs-cloud/crds/` of the
//! workspace (or of the root given as the only argument).
//! `crdgen --strip-cel DIR` writes CRDs without CEL rules into DIR, for API servers older than
//! 1.25 (the test server), which do not know `x-kubernetes-validations`.

use std::path::PathBuf;

use pbs_cloud_operator::crdgen;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--strip-cel") {
        let dir = PathBuf::from(
            args.get(1)
                .ok_or_else(|| anyhow::anyhow!("usage: crdgen --strip-cel DIR"))?,
        );
        std::fs::create_dir_all(&dir)?;
        for crd in crdgen::all() {
            let crd = crdgen::strip_cel(crd);
            let path = dir.join(crdgen::file_name(&crd));
            std::fs::write(&path, serde_yaml::to_string(&crd)?)?;
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    let root = match args.first() {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    for dir in crdgen::CRD_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in crdgen::files()? {
            std::fs::write(dir.join(&name), yaml)?;
            println!("wrote {}", dir.join(name).display());
        }
    }
    Ok(())
}
