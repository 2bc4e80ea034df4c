//! Accounts, tokens and tenants over REST.
//!
//! [`Auth`] holds the session (server URL, user, access and refresh token). Refresh tokens are
//! single-use: every refresh rotates the pair, and [`Auth`] writes the new pair to its session
//! file at once (when it has one), re-reading the file first so that two processes sharing a
//! session do not burn each other's refresh token.

use finwise_protocol::locks::LockExt;
use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// What a login yields, persisted by the CLI in `session.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Base URL of the server, e.g. `http://127.0.0.1:8000`.
    pub server: String,
    pub user_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The tenant commands work on (`finwise tenant use`); not used by the library itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<String>,
}

/// A tenant as `GET /tenants` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    pub uuid: String,
    pub name: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default, rename = "createdAt")]
    pub created_at: Option<String>,
    #[serde(default, rename = "updatedAt")]
    pub updated_at: Option<String>,
}

/// A member of a tenant as `GET /tenants/{id}/members` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub user_id: String,
    pub name: String,
    pub email: String,
    /// `owner` or `member`.
    pub role: String,
}

/// An authenticated session with a server.
pub struct Auth {
    http: reqwest::Client,
    session: Mutex<Session>,
    file: Option<PathBuf>,
    /// One refresh at a time in this process (a refresh token works once: two concurrent
    /// refreshes with it would make the server revoke the whole session).
    refresh_lock: tokio::sync::Mutex<()>,
}

/// A lock file next to the session file: one refresh at a time across processes.
struct FileLock(PathBuf);

impl FileLock {
    async fn acquire(session_file: &Path) -> FileLock {
        let path = session_file.with_extension("json.lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return FileLock(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock older than 30 s belongs to a process that died while refreshing.
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(30));
                    if stale || std::time::Instant::now() > deadline {
                        let _ = std::fs::remove_file(&path);
                    } else {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
                // The directory is not writable or similar: refresh without the lock.
                Err(_) => return FileLock(PathBuf::new()),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client without TLS builds")
}

/// Normalises a server URL: adds `http://` when no scheme is given, drops a trailing slash.
pub fn normalize_server(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

async fn error_of(resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<Value>(&text) {
        Ok(v) => match &v["detail"] {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    let loc = i["loc"]
                        .as_array()
                        .map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."))
                        .unwrap_or_default();
                    format!("{loc}: {}", i["msg"].as_str().unwrap_or(""))
                })
                .collect::<Vec<_>>()
                .join("; "),
            Value::Null => text.clone(),
            other => other.to_string(),
        },
        Err(_) => text,
    };
    Error::Http { status, message }
}

#[derive(Deserialize)]
struct TokenPair {
    access_token: String,
    refresh_token: String,
}

impl Auth {
    /// Registers a new user (`POST /register`). Does not log in.
    pub async fn register(server: &str, name: &str, email: &str, password: &str) -> Result<()> {
        let server = normalize_server(server);
        let resp = http_client()
            .post(format!("{server}/register"))
            .json(&json!({"name": name, "email": email, "password": password}))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(())
    }

    /// Logs in (`POST /login`) and returns the session; `file` is where refreshed tokens go.
    pub async fn login(server: &str, username_or_email: &str, password: &str, file: Option<PathBuf>) -> Result<Auth> {
        let server = normalize_server(server);
        let http = http_client();
        let resp = http
            .post(format!("{server}/login"))
            .json(&json!({"username_or_email": username_or_email, "password": password}))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        let v: Value = resp.json().await?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let session = Session {
            server,
            user_id: s("uuid"),
            name: s("name"),
            email: s("email"),
            access_token: s("access_token"),
            refresh_token: s("refresh_token"),
            tenant: None,
            tenant_name: None,
        };
        if session.access_token.is_empty() || session.user_id.is_empty() {
            return Err(Error::Protocol("login answer without uuid or access_token".into()));
        }
        let auth = Auth { http, session: Mutex::new(session), file, refresh_lock: tokio::sync::Mutex::new(()) };
        auth.save()?;
        Ok(auth)
    }

    /// A session from memory (`file`: where to persist refreshed tokens).
    pub fn from_session(session: Session, file: Option<PathBuf>) -> Auth {
        Auth { http: http_client(), session: Mutex::new(session), file, refresh_lock: tokio::sync::Mutex::new(()) }
    }

    /// Loads a session file written by [`Auth::login`] or [`Auth::save`].
    pub fn load(file: &Path) -> Result<Auth> {
        let text = std::fs::read_to_string(file)?;
        let session: Session = serde_json::from_str(&text)?;
        Ok(Auth::from_session(session, Some(file.to_path_buf())))
    }

    /// Writes the session to its file (mode 0600 on Unix), if it has one.
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.file else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&self.session())?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// A copy of the current session.
    pub fn session(&self) -> Session {
        self.session.locked().clone()
    }

    /// Changes the session (e.g. the current tenant) and saves it.
    pub fn update_session(&self, f: impl FnOnce(&mut Session)) -> Result<()> {
        f(&mut self.session.locked());
        self.save()
    }

    pub fn server(&self) -> String {
        self.session().server
    }

    pub fn user_id(&self) -> String {
        self.session().user_id
    }

    pub fn access_token(&self) -> String {
        self.session().access_token
    }

    /// Rotates the token pair with the refresh token. Refreshes are serialised within the
    /// process and, through a lock file beside the session file, across processes sharing it;
    /// a pair rotated meanwhile by someone else is adopted instead of refreshing again.
    pub async fn refresh(&self) -> Result<String> {
        let seen = self.session().refresh_token;
        let _in_process = self.refresh_lock.lock().await;
        let current = self.session();
        if current.refresh_token != seen {
            return Ok(current.access_token);
        }
        let _across_processes = match &self.file {
            Some(path) => {
                let lock = FileLock::acquire(path).await;
                let disk = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<Session>(&t).ok());
                if let Some(disk) = disk.filter(|d| d.refresh_token != seen && d.user_id == current.user_id) {
                    let mut s = self.session.locked();
                    s.access_token = disk.access_token.clone();
                    s.refresh_token = disk.refresh_token;
                    return Ok(disk.access_token);
                }
                Some(lock)
            }
            None => None,
        };
        let resp = self
            .http
            .post(format!("{}/token", current.server))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", seen.as_str())])
            .send()
            .await?;
        if resp.status().as_u16() == 401 || resp.status().as_u16() == 400 {
            return Err(Error::SessionExpired(error_of(resp).await.to_string()));
        }
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        let pair: TokenPair = resp.json().await?;
        {
            let mut s = self.session.locked();
            s.access_token = pair.access_token.clone();
            s.refresh_token = pair.refresh_token;
        }
        self.save()?;
        tracing::debug!("access token refreshed");
        Ok(pair.access_token)
    }

    /// Sends an authenticated request; on 401 refreshes the token once and retries.
    async fn send(
        &self,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let server = self.server();
        let resp = make(&self.http, &server).bearer_auth(self.access_token()).send().await?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let token = self.refresh().await?;
        Ok(make(&self.http, &server).bearer_auth(token).send().await?)
    }

    /// Sends an authenticated request and reads its JSON answer; a refusal becomes [`Error::Http`]
    /// with the server's message.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<T> {
        let resp = self.send(make).await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(resp.json().await?)
    }

    /// [`Self::call`] for answers without a body (204).
    async fn call_empty(&self, make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder) -> Result<()> {
        let resp = self.send(make).await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(())
    }

    /// The user's tenants (`GET /tenants`).
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        self.call(|h, s| h.get(format!("{s}/tenants"))).await
    }

    /// Creates a tenant owned by the user (`POST /tenants`).
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({"uuid": id, "name": name});
        self.call(|h, s| h.post(format!("{s}/tenants")).json(&body)).await
    }

    /// Renames a tenant (owners only).
    pub async fn rename_tenant(&self, tenant: &str, name: &str) -> Result<Tenant> {
        let body = json!({"name": name});
        self.call(|h, s| h.put(format!("{s}/tenants/{tenant}")).json(&body)).await
    }

    /// Deletes a tenant with all its data (owners only); its members' sockets close.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<Tenant> {
        self.call(|h, s| h.delete(format!("{s}/tenants/{tenant}/complete"))).await
    }

    /// The tenant's members.
    pub async fn members(&self, tenant: &str) -> Result<Vec<Member>> {
        self.call(|h, s| h.get(format!("{s}/tenants/{tenant}/members"))).await
    }

    /// Adds the registered user with this e-mail as `member` or `owner`, or changes their role
    /// (owners only); returns the members after the change.
    pub async fn add_member(&self, tenant: &str, email: &str, role: &str) -> Result<Vec<Member>> {
        let body = json!({"email": email, "role": role});
        self.call(|h, s| h.post(format!("{s}/tenants/{tenant}/members")).json(&body)).await
    }

    /// Removes a member (owners), or leaves the tenant (`user_id` = one's own). The last owner
    /// cannot leave (409).
    pub async fn remove_member(&self, tenant: &str, user_id: &str) -> Result<()> {
        self.call_empty(|h, s| h.delete(format!("{s}/tenants/{tenant}/members/{user_id}"))).await
    }

    /// Whether the server answers `GET /health` within two seconds.
    pub async fn server_reachable(&self) -> bool {
        let url = format!("{}/health", self.server());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.http.get(url).send()).await,
            Ok(Ok(r)) if r.status().as_u16() < 500
        )
    }
}
