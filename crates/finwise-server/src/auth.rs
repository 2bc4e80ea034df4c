//! Accounts and tokens, in the central tables of the store (`auth.db`, or the PostgreSQL
//! database), whose tenants and members are in [`crate::tenants`]. The SQL is the same for both
//! engines ([`crate::storage::sql`]).
//!
//! Passwords are Argon2id; bcrypt hashes imported from the Python backend verify and are
//! rehashed on the next successful login. Access tokens are HS256 JWTs; refresh tokens are
//! random, stored only as SHA-256 hashes, single-use, and rotated in families: presenting a
//! refresh token that was already used revokes its whole family (it was stolen or replayed).

use std::{path::Path, sync::Arc, time::Duration};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, SaltString},
    Argon2,
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::tenants::{Member, Tenant};
use crate::{
    sql_params as params,
    storage::{
        sql::{Row, Sql, SqlDb},
        StorageError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Email already registered")]
    EmailTaken,
    #[error("Username already taken")]
    NameTaken,
    #[error("Tenant with name '{0}' already exists for this user.")]
    TenantNameExists(String),
    #[error("Tenant id is already in use")]
    TenantIdTaken,
    #[error("refresh token is invalid, expired or already used")]
    BadRefreshToken,
    #[error("a tenant must keep at least one owner: make another member an owner first, or delete the tenant")]
    LastOwner,
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("storage: {0}")]
    Other(String),
}

/// A user as the 0.4 API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub name: String,
    pub email: String,
    pub uuid: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

/// The naive UTC timestamp form of 0.4's user and tenant objects.
pub fn naive_now() -> String {
    chrono::Utc::now().naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The users, tenants, members and refresh tokens (the central tables of the store).
pub struct AuthStore {
    db: Arc<dyn SqlDb>,
}

fn user_row(r: &Row) -> Result<User, StorageError> {
    Ok(User { uuid: r.text(0)?, name: r.text(1)?, email: r.text(2)?, created_at: r.text(3)?, updated_at: r.text(4)? })
}
const USER_COLS: &str = "id, name, email, created_at, updated_at";

impl AuthStore {
    pub fn new(db: Arc<dyn SqlDb>) -> Self {
        AuthStore { db }
    }

    /// The store of a data dir's `auth.db` (operator commands).
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        Ok(AuthStore::new(Arc::new(crate::storage::sqlite::SqliteCentral::open(path)?)))
    }

    /// Runs `f` in one transaction of the central tables (here and in [`crate::tenants`]).
    pub(crate) fn tx<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, AuthError>) -> Result<T, AuthError> {
        self.db.tx(f)
    }

    pub fn create_user(&self, name: &str, email: &str, password_hash: &str) -> Result<User, AuthError> {
        let check = |db: &mut dyn Sql| -> Result<(), AuthError> {
            if db.exists("SELECT 1 FROM users WHERE email = $1", params![email])? {
                return Err(AuthError::EmailTaken);
            }
            if db.exists("SELECT 1 FROM users WHERE name = $1", params![name])? {
                return Err(AuthError::NameTaken);
            }
            Ok(())
        };
        let now = naive_now();
        let user = User {
            name: name.into(),
            email: email.into(),
            uuid: uuid::Uuid::new_v4().to_string(),
            created_at: now.clone(),
            updated_at: now,
        };
        let inserted = self.tx(|db| {
            check(db)?;
            db.execute(
                "INSERT INTO users (id, name, email, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
                params![&user.uuid, &user.name, &user.email, password_hash, &user.created_at, &user.updated_at],
            )?;
            Ok(())
        });
        match inserted {
            Ok(()) => Ok(user),
            // two registrations raced (several servers on one database): say which name is taken
            Err(AuthError::Storage(e)) if e.is_unique_violation() => {
                self.tx(|db| check(db))?;
                Err(AuthError::Storage(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Inserts a user with a given id and hash (legacy import). An existing user with this id is
    /// updated in place (not replaced: a replace would cascade to its memberships and tokens),
    /// keeping a password hash that was already upgraded to Argon2id at a login here.
    pub fn import_user(&self, user: &User, password_hash: &str) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO users (id, name, email, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   password_hash = CASE WHEN users.password_hash LIKE '$2%' OR users.password_hash LIKE '!%'
                     THEN excluded.password_hash ELSE users.password_hash END, created_at = excluded.created_at, updated_at = excluded.updated_at",
                params![&user.uuid, &user.name, &user.email, password_hash, &user.created_at, &user.updated_at],
            )?;
            Ok(())
        })
    }

    /// The user whose name or e-mail is `login` (case-insensitive), with the password hash.
    pub fn find_login(&self, login: &str) -> Result<Option<(User, String)>, AuthError> {
        let sql = format!("SELECT {USER_COLS}, password_hash FROM users WHERE email = $1 OR name = $1 LIMIT 1");
        self.tx(|db| match db.query_opt(&sql, params![login])? {
            Some(r) => Ok(Some((user_row(&r)?, r.text(5)?))),
            None => Ok(None),
        })
    }

    pub fn user(&self, id: &str) -> Result<Option<User>, AuthError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
        self.tx(|db| Ok(db.query_opt(&sql, params![id])?.map(|r| user_row(&r)).transpose()?))
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, AuthError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
        self.tx(|db| Ok(db.query_opt(&sql, params![email])?.map(|r| user_row(&r)).transpose()?))
    }

    /// Every user with the password hash (`finwise migrate`).
    pub fn all_users(&self) -> Result<Vec<(User, String)>, AuthError> {
        let sql = format!("SELECT {USER_COLS}, password_hash FROM users ORDER BY id");
        self.tx(|db| {
            db.query(&sql, &[])?.iter().map(|r| Ok((user_row(r)?, r.text(5)?))).collect::<Result<Vec<_>, AuthError>>()
        })
    }

    pub fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", params![user_id, hash])?;
            Ok(())
        })
    }

    /// Stores a new refresh token of `family` and returns the token itself.
    pub fn issue_refresh(&self, user_id: &str, family: &str, ttl: Duration) -> Result<String, AuthError> {
        let token = random_token();
        let expires = finwise_protocol::time::now_ms() + ttl.as_millis() as i64;
        self.tx(|db| {
            db.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at_ms) VALUES ($1, $2, $3, $4)",
                params![&sha256_hex(&token), user_id, family, expires],
            )?;
            Ok(())
        })?;
        Ok(token)
    }

    /// Consumes a refresh token: returns `(user_id, family)`. A reused token revokes its family.
    pub fn use_refresh(&self, token: &str) -> Result<(String, String), AuthError> {
        let hash = sha256_hex(token);
        // The inner result is the answer; the transaction commits either way (a revocation
        // must stick). `FOR UPDATE` makes two servers that see the same token take turns.
        self.tx(|db| {
            let row = db.query_opt(
                "SELECT user_id, family, expires_at_ms, used, revoked FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                params![&hash],
            )?;
            let Some(r) = row else { return Ok(Err(AuthError::BadRefreshToken)) };
            let (user, family, expires, used, revoked) = (r.text(0)?, r.text(1)?, r.int(2)?, r.bool(3)?, r.bool(4)?);
            if used || revoked {
                db.execute("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1", params![&family])?;
                return Ok(Err(AuthError::BadRefreshToken));
            }
            if expires < finwise_protocol::time::now_ms() {
                return Ok(Err(AuthError::BadRefreshToken));
            }
            db.execute("UPDATE refresh_tokens SET used = TRUE WHERE token_hash = $1", params![&hash])?;
            Ok(Ok((user, family)))
        })?
    }

    /// Revokes every refresh token of a user (logout everywhere).
    pub fn revoke_user_tokens(&self, user_id: &str) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute("UPDATE refresh_tokens SET revoked = TRUE WHERE user_id = $1", params![user_id])?;
            Ok(())
        })
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Hashes a password with Argon2id (CPU-heavy: call off the async runtime).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let params = argon2::Params::default();
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params.clone());
    let hash = with_argon_memory(params.block_count(), |blocks| {
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
        let output = argon2::password_hash::Output::init_with(
            params.output_len().unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN),
            |out| {
                argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, blocks).map_err(Into::into)
            },
        )?;
        Ok(PasswordHash {
            algorithm: argon2::Algorithm::Argon2id.ident(),
            version: Some(argon2::Version::V0x13.into()),
            params: argon2::password_hash::ParamsString::try_from(&params)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        }
        .to_string())
    });
    hash.expect("argon2 hashing with default params")
}

/// Verifies a password; returns `(valid, needs_rehash)`. bcrypt hashes of the Python backend
/// verify and need a rehash. CPU-heavy: call off the async runtime.
pub fn verify_password(password: &str, hash: &str) -> (bool, bool) {
    if hash.starts_with("$2") {
        return (bcrypt::verify(password, hash).unwrap_or(false), true);
    }
    let verified = (|| -> argon2::password_hash::Result<bool> {
        let parsed = PasswordHash::new(hash)?;
        let params = argon2::Params::try_from(&parsed)?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm)?;
        let version = parsed.version.map(argon2::Version::try_from).transpose()?.unwrap_or_default();
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return Ok(false) };
        if params.block_count() > MAX_ARGON_BLOCKS {
            return Ok(false);
        }
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let argon = Argon2::new(algorithm, version, params.clone());
        with_argon_memory(params.block_count(), |blocks| {
            let mut out = vec![0u8; expected.len()];
            argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)?;
            // Output's equality is constant-time
            Ok(argon2::password_hash::Output::new(&out)? == expected)
        })
    })();
    (verified.unwrap_or(false), false)
}

/// The largest Argon2 memory a stored hash may ask for (64 MiB; ours use 19 MiB).
const MAX_ARGON_BLOCKS: usize = 64 * 1024;

/// Runs `f` with this thread's Argon2 memory of at least `blocks` blocks, allocated once per
/// thread and reused: hashing runs on a few fixed threads (`limits::HashGate`), so the server
/// holds at most a few of these 19 MiB buffers, whatever the allocator would keep of freed ones.
fn with_argon_memory<T>(
    blocks: usize,
    f: impl FnOnce(&mut [argon2::Block]) -> argon2::password_hash::Result<T>,
) -> argon2::password_hash::Result<T> {
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, argon2::Block::default());
        }
        f(&mut m[..blocks])
    })
}

/// Seconds an access token is still accepted after its `exp` (clock differences between hosts).
pub const TOKEN_LEEWAY_SECS: i64 = 5;

/// JWT access-token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    /// Always `"access"`: refresh tokens are opaque and never JWTs.
    pub typ: String,
}

/// Issues and checks access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn issue(&self, user_id: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims =
            Claims { sub: user_id.into(), iat: now, exp: now + self.access_ttl.as_secs() as i64, typ: "access".into() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 encoding")
    }

    /// Checks signature (HS256 only: `alg: none` and other algorithms are refused), expiry and type.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = TOKEN_LEEWAY_SECS as u64;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| e.to_string())?;
        if data.claims.typ != "access" {
            return Err("not an access token".into());
        }
        Ok(data.claims)
    }
}

/// Loads the JWT secret from the data dir, generating it (owner-only permissions) on first start.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s.trim()) {
            if bytes.len() >= 32 {
                return Ok(bytes);
            }
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a valid secret", path.display()),
        ));
    }
    let mut bytes = vec![0u8; 64];
    rand::rng().fill_bytes(&mut bytes);
    write_secret(path, &bytes)?;
    Ok(bytes)
}

/// Writes a new secret file (owner-only permissions); fails if the file exists.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_verify_and_ask_for_rehash() {
        let h = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(verify_password("pw", &h), (true, true));
        assert!(!verify_password("nope", &h).0);
        let a = hash_password("pw");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_eq!(verify_password("pw", &a), (true, false));
        assert_eq!(verify_password("nope", &a), (false, false));
    }

    #[test]
    fn hashes_are_interchangeable_with_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default().hash_password(b"Grune Wiese 42", &salt).unwrap().to_string();
        assert_eq!(verify_password("Grune Wiese 42", &theirs), (true, false));
        assert_eq!(verify_password("Grune Wiese 43", &theirs), (false, false));
        let ours = hash_password("Grune Wiese 42");
        assert!(Argon2::default().verify_password(b"Grune Wiese 42", &PasswordHash::new(&ours).unwrap()).is_ok());
        assert_eq!(
            verify_password("x", "$argon2id$v=19$m=1048576,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            (false, false),
            "a stored hash may not ask for 1 GiB"
        );
    }
}
