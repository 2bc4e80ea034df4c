//! The layout of a data dir: `auth.db` (accounts, tenants, members, refresh tokens),
//! `tenants/<tenant id>.db` (one database per tenant), `jwt.secret` (unless the secret is
//! configured) and `finwise.lock` (one writing process at a time). The server and the operator
//! commands name these files only through [`DataDir`]; a backup has the same layout.

use std::path::PathBuf;

use super::sqlite::create_private_dir;

/// Where the files of a data dir live.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn auth_db(&self) -> PathBuf {
        self.root.join("auth.db")
    }
    pub fn tenants_dir(&self) -> PathBuf {
        self.root.join("tenants")
    }
    /// The file of a tenant. `tenant` must be a validated [`crate::TenantId`], so it cannot
    /// contain a path separator.
    pub fn tenant_db(&self, tenant: &crate::TenantId) -> PathBuf {
        self.tenant_file(tenant.as_str())
    }
    /// `tenants/<stem>.db`, for a stem [`DataDir::tenant_files`] listed (in this data dir or in
    /// another one, when copying): not necessarily a tenant id, but never a path separator.
    pub fn tenant_file(&self, stem: &str) -> PathBuf {
        self.tenants_dir().join(format!("{stem}.db"))
    }
    /// The tenant database files: `(file stem, path)` of every `tenants/*.db`, sorted. A stem is
    /// a tenant id unless someone put another file there (`finwise doctor` reports those). No
    /// `tenants` dir: no files.
    pub fn tenant_files(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(self.tenants_dir()) {
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
    /// The JWT signing secret, generated at the first start unless one is configured.
    pub fn jwt_secret(&self) -> PathBuf {
        self.root.join("jwt.secret")
    }
    /// The lock file that keeps a data dir to one writing process (see [`DataDir::lock`]).
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("finwise.lock")
    }

    /// Takes the data dir for `what` (`serve`, `restore`, …) until the returned guard is dropped
    /// or the process ends (even by SIGKILL: it is an `flock`). Two writers on one tenant file
    /// would break the seq and ack invariants, so `serve` and every operator command that writes
    /// take it; `backup` and `doctor` only read and do not. Creates the data dir (mode 0700) when
    /// it is missing. Refused with the holder's pid and command while another process holds it.
    pub fn lock(&self, what: &str) -> anyhow::Result<DataDirLock> {
        use std::io::{Read, Seek, Write};
        create_private_dir(&self.root)
            .map_err(|e| anyhow::anyhow!("cannot create the data dir {}: {e}", self.root.display()))?;
        let path = self.lock_file();
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process".to_owned() } else { holder.to_owned() };
                anyhow::bail!(
                    "the data dir {} is in use by {holder}; stop it first (`finwise backup` and `finwise doctor` work beside a running server)",
                    self.root.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "finwise {what} (pid {})", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file })
    }

    /// Who holds the data dir now, if anyone (for `doctor`): the holder's line from the lock file.
    pub fn holder(&self) -> Option<String> {
        use std::io::Read;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).open(self.lock_file()).ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => {
                let mut s = String::new();
                file.read_to_string(&mut s).ok()?;
                Some(s.trim().to_owned())
            }
        }
    }
}

/// Holds a data dir (see [`DataDir::lock`]); dropping it releases the dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}
