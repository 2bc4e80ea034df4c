//! Operator tools: backup and restore, the FinWise 0.4 importer, the data-dir doctor.

pub mod backup;
pub mod doctor;
pub mod legacy;

use std::path::{Path, PathBuf};

/// The data dir: the flag, else `FINWISE_DATA_DIR`, else the `data_dir` of the config file
/// (`FINWISE_CONFIG`), else `data`.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if let Some(d) = std::env::var_os("FINWISE_DATA_DIR") {
        return d.into();
    }
    if let Some(cfg) = std::env::var_os("FINWISE_CONFIG") {
        if let Ok(s) = finwise_server::config::Settings::from_file(Path::new(&cfg)) {
            if let Some(d) = s.data_dir {
                return d;
            }
        }
    }
    PathBuf::from("data")
}

/// The tenant database files of a data dir: `(tenant id or file stem, path)`, sorted.
pub fn tenant_files(data: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let dir = data.join("tenants");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "db") {
            if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                out.push((stem.to_owned(), p.clone()));
            }
        }
    }
    out.sort();
    Ok(out)
}
