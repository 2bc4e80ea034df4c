//! Per-user settings of the 0.4 frontend (O11–O13): log level, log categories and history
//! retention, created with defaults on first read, replaced last-writer-wins on `updated_at`.

use serde::{Deserialize, Serialize};

use crate::{
    auth::{naive_now, AuthError, AuthStore},
    sql_params,
    storage::sql::{Row, Sql},
};

/// The log levels the 0.4 frontend knows.
pub const LOG_LEVELS: &[&str] = &["DEBUG", "INFO", "WARN", "ERROR"];
/// Most log categories one user may keep, and the longest one (bytes).
pub const MAX_CATEGORIES: usize = 64;
pub const MAX_CATEGORY_BYTES: usize = 100;

/// A user's settings as the 0.4 API shows them.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UserSettings {
    pub id: String,
    pub user_id: String,
    pub log_level: String,
    pub log_categories: Vec<String>,
    pub history_retention_days: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// What a client writes (every field optional: an empty object writes the defaults, as 0.4 did).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct SettingsUpdate {
    /// One of DEBUG, INFO, WARN, ERROR (default INFO)
    pub log_level: Option<String>,
    pub log_categories: Option<Vec<String>>,
    pub history_retention_days: Option<i64>,
    /// When the client changed them (ISO-8601); absent: now. An update older than (or as old
    /// as) the stored settings is ignored.
    pub updated_at: Option<String>,
}

impl SettingsUpdate {
    /// Checks the values; `Err((field, message))` names the offending one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(l) = &self.log_level {
            if !LOG_LEVELS.contains(&l.as_str()) {
                return Err(("log_level", format!("must be one of {}", LOG_LEVELS.join(", "))));
            }
        }
        if let Some(c) = &self.log_categories {
            if c.len() > MAX_CATEGORIES || c.iter().any(|s| s.len() > MAX_CATEGORY_BYTES) {
                let msg = format!("at most {MAX_CATEGORIES} categories of at most {MAX_CATEGORY_BYTES} bytes");
                return Err(("log_categories", msg));
            }
        }
        if let Some(d) = self.history_retention_days {
            if !(0..=36_500).contains(&d) {
                return Err(("history_retention_days", "must be 0 to 36500".into()));
            }
        }
        if let Some(t) = &self.updated_at {
            if finwise_protocol::time::parse_ms(t).is_none() {
                return Err(("updated_at", "expected an ISO-8601 timestamp".into()));
            }
        }
        Ok(())
    }
}

const COLS: &str = "id, user_id, log_level, log_categories, history_retention_days, created_at, updated_at";

fn row(r: &Row) -> Result<UserSettings, AuthError> {
    Ok(UserSettings {
        id: r.text(0)?,
        user_id: r.text(1)?,
        log_level: r.text(2)?,
        log_categories: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
        history_retention_days: r.int(4)?,
        created_at: r.text(5)?,
        updated_at: r.text(6)?,
    })
}

/// The naive UTC form 0.4 stores (`2026-11-25T14:54:44.307794`) of `ms`.
fn naive(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

fn stamp_ms(naive: &str) -> i64 {
    finwise_protocol::time::parse_ms(naive).unwrap_or(i64::MIN)
}

fn insert(db: &mut dyn Sql, s: &UserSettings) -> Result<(), AuthError> {
    let categories = serde_json::to_string(&s.log_categories).expect("strings serialise");
    db.execute(
        &format!("INSERT INTO user_settings ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        sql_params![
            &s.id,
            &s.user_id,
            &s.log_level,
            &categories,
            s.history_retention_days,
            &s.created_at,
            &s.updated_at
        ],
    )?;
    Ok(())
}

fn defaults(user: &str) -> UserSettings {
    let now = naive_now();
    UserSettings {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.to_owned(),
        log_level: "INFO".into(),
        log_categories: vec!["store".into(), "ui".into(), "service".into()],
        history_retention_days: 60,
        created_at: now.clone(),
        updated_at: now,
    }
}

fn stored(db: &mut dyn Sql, user: &str) -> Result<Option<UserSettings>, AuthError> {
    db.query_opt(&format!("SELECT {COLS} FROM user_settings WHERE user_id = $1 FOR UPDATE"), sql_params![user])?
        .map(|r| row(&r))
        .transpose()
}

impl AuthStore {
    /// The user's settings, created with the defaults when there are none.
    pub fn user_settings(&self, user: &str) -> Result<UserSettings, AuthError> {
        self.tx(|db| match stored(db, user)? {
            Some(s) => Ok(s),
            None => {
                let s = defaults(user);
                insert(db, &s)?;
                Ok(s)
            }
        })
    }

    /// Replaces the user's settings with `u` unless the stored ones are as new or newer; returns
    /// what is stored afterwards. Fields `u` leaves out take their defaults.
    pub fn put_user_settings(&self, user: &str, u: &SettingsUpdate) -> Result<UserSettings, AuthError> {
        self.tx(|db| {
            let current = stored(db, user)?;
            let at_ms = u.updated_at.as_deref().and_then(finwise_protocol::time::parse_ms);
            if let (Some(c), Some(at)) = (&current, at_ms) {
                if at <= stamp_ms(&c.updated_at) {
                    return Ok(c.clone());
                }
            }
            let d = defaults(user);
            let next = UserSettings {
                id: current.as_ref().map_or(d.id, |c| c.id.clone()),
                user_id: user.to_owned(),
                log_level: u.log_level.clone().unwrap_or(d.log_level),
                log_categories: u.log_categories.clone().unwrap_or(d.log_categories),
                history_retention_days: u.history_retention_days.unwrap_or(d.history_retention_days),
                created_at: current.as_ref().map_or(d.created_at, |c| c.created_at.clone()),
                updated_at: at_ms.map_or(d.updated_at, naive),
            };
            db.execute("DELETE FROM user_settings WHERE user_id = $1", sql_params![user])?;
            insert(db, &next)?;
            Ok(next)
        })
    }

    /// Back to the defaults (a new row: new id, created now).
    pub fn reset_user_settings(&self, user: &str) -> Result<UserSettings, AuthError> {
        self.tx(|db| {
            db.execute("DELETE FROM user_settings WHERE user_id = $1", sql_params![user])?;
            let s = defaults(user);
            insert(db, &s)?;
            Ok(s)
        })
    }

    /// Every user's settings (`finwise migrate`).
    pub fn all_user_settings(&self) -> Result<Vec<UserSettings>, AuthError> {
        self.tx(|db| {
            db.query(&format!("SELECT {COLS} FROM user_settings ORDER BY user_id"), &[])?.iter().map(row).collect()
        })
    }

    /// Stores copied settings as they are, replacing any (`finwise migrate`, `import-legacy`).
    pub fn import_user_settings(&self, s: &UserSettings) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute("DELETE FROM user_settings WHERE user_id = $1", sql_params![&s.user_id])?;
            insert(db, s)
        })
    }
}
