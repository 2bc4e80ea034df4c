//! Operator tools: backup and restore, the FinWise 0.4 importer, the doctor, migrate between
//! a data dir and PostgreSQL.

pub mod backup;
pub mod doctor;
pub mod legacy;
pub mod migrate;

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
