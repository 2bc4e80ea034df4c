//! Tenants (households) and their members, in the central `auth.db` beside the accounts of
//! [`crate::auth`] (one database, one list of migrations there): creating, renaming and deleting
//! tenants, who may use them (roles; the tenants tokenless 0.4 clients may use), and the members.
//! A tenant keeps at least one owner.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::{
    auth::{naive_now, AuthError, AuthStore},
    TenantId,
};

/// A tenant as the 0.4 API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub name: String,
    pub uuid: String,
    pub user_id: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

/// A member of a tenant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: String,
}

const TENANT_COLS: &str = "t.id, t.name, t.user_id, t.created_at, t.updated_at";

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant { uuid: r.get(0)?, name: r.get(1)?, user_id: r.get(2)?, created_at: r.get(3)?, updated_at: r.get(4)? })
}

/// Whether `user_id` is the only owner of the tenant (in the transaction `tx`).
fn last_owner(tx: &rusqlite::Transaction<'_>, tenant: &TenantId, user_id: &str) -> Result<bool, AuthError> {
    let (is_owner, owners): (bool, i64) = tx.query_row(
        "SELECT COALESCE(MAX(user_id = ?2), 0), COUNT(*) FROM members WHERE tenant_id = ?1 AND role = 'owner'",
        params![tenant.as_str(), user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(is_owner && owners == 1)
}

/// The tenant and member methods of the store (same connection, tables `tenants` and `members`).
impl AuthStore {
    /// Tenants `user_id` is a member of; when `None` (0.4 legacy listing), all tenants legacy
    /// clients may use.
    /// `legacy_only`: only tenants legacy clients may use (the caller is one).
    pub fn tenants(&self, user_id: Option<&str>, legacy_only: bool) -> Result<Vec<Tenant>, AuthError> {
        let db = self.db();
        let rows = match user_id {
            Some(u) => {
                let sql = format!(
                    "SELECT {TENANT_COLS} FROM tenants t JOIN members m ON m.tenant_id = t.id
                     WHERE m.user_id = ?1 AND (?2 = 0 OR t.legacy_open) ORDER BY t.created_at"
                );
                let mut stmt = db.prepare(&sql)?;
                let rows =
                    stmt.query_map(params![u, legacy_only], tenant_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            }
            None => {
                let mut stmt = db.prepare(&format!(
                    "SELECT {TENANT_COLS} FROM tenants t WHERE t.legacy_open ORDER BY t.created_at"
                ))?;
                let rows = stmt.query_map([], tenant_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            }
        };
        Ok(rows)
    }

    pub fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, AuthError> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = ?1");
        Ok(self.db().query_row(&sql, [id.as_str()], tenant_row).optional()?)
    }

    /// Creates a tenant with its creator as owner. Creating a tenant the user already owns under
    /// the same id is idempotent (the 0.4 frontend retries).
    /// `legacy_open`: created by a tokenless 0.4 client, so tokenless clients may use it.
    pub fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        user_id: &str,
        legacy_open: bool,
    ) -> Result<Tenant, AuthError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let sql = format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = ?1");
        if let Some(t) = tx.query_row(&sql, [id.as_str()], tenant_row).optional()? {
            let member: bool = tx
                .query_row(
                    "SELECT 1 FROM members WHERE tenant_id = ?1 AND user_id = ?2",
                    params![id.as_str(), user_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            return if member { Ok(t) } else { Err(AuthError::TenantIdTaken) };
        }
        let dup: Option<()> = tx
            .query_row(
                "SELECT 1 FROM tenants t JOIN members m ON m.tenant_id = t.id WHERE m.user_id = ?1 AND t.name = ?2",
                params![user_id, name],
                |_| Ok(()),
            )
            .optional()?;
        if dup.is_some() {
            return Err(AuthError::TenantNameExists(name.into()));
        }
        let now = naive_now();
        tx.execute(
            "INSERT INTO tenants (id, name, user_id, created_at, updated_at, legacy_open) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![id.as_str(), name, user_id, now, legacy_open],
        )?;
        tx.execute(
            "INSERT INTO members (tenant_id, user_id, role) VALUES (?1, ?2, 'owner')",
            params![id.as_str(), user_id],
        )?;
        tx.commit()?;
        Ok(Tenant {
            name: name.into(),
            uuid: id.as_str().into(),
            user_id: user_id.into(),
            created_at: now.clone(),
            updated_at: now,
        })
    }

    /// Renames a tenant, with the check `create_tenant` makes: `user_id` (the renaming user, or
    /// the tenant's creator for a legacy client) has no other tenant of that name.
    pub fn rename_tenant(&self, id: &TenantId, name: &str, user_id: Option<&str>) -> Result<Option<Tenant>, AuthError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let creator: Option<String> =
            tx.query_row("SELECT user_id FROM tenants WHERE id = ?1", [id.as_str()], |r| r.get(0)).optional()?;
        let Some(creator) = creator else { return Ok(None) };
        let user = user_id.unwrap_or(&creator);
        let dup: Option<()> = tx
            .query_row(
                "SELECT 1 FROM tenants t JOIN members m ON m.tenant_id = t.id WHERE m.user_id = ?1 AND t.name = ?2 AND t.id <> ?3",
                params![user, name, id.as_str()],
                |_| Ok(()),
            )
            .optional()?;
        if dup.is_some() {
            return Err(AuthError::TenantNameExists(name.into()));
        }
        tx.execute(
            "UPDATE tenants SET name = ?2, updated_at = ?3 WHERE id = ?1",
            params![id.as_str(), name, naive_now()],
        )?;
        tx.commit()?;
        drop(db);
        self.tenant(id)
    }

    /// Whether tokenless (legacy) clients may use the tenant: one created by a legacy client or
    /// imported from 0.4, or one not created yet (the 0.4 frontend opens the socket of a new
    /// tenant before its `POST /tenants/` returns). Never a tenant created by a token user.
    pub fn legacy_open(&self, id: &TenantId) -> Result<bool, AuthError> {
        let open: Option<bool> = self
            .db()
            .query_row("SELECT legacy_open FROM tenants WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()?;
        Ok(open.unwrap_or(true))
    }

    pub fn delete_tenant(&self, id: &TenantId) -> Result<(), AuthError> {
        let db = self.db();
        db.execute("DELETE FROM members WHERE tenant_id = ?1", [id.as_str()])?;
        db.execute("DELETE FROM tenants WHERE id = ?1", [id.as_str()])?;
        Ok(())
    }

    /// The role of `user_id` in the tenant, if a member.
    pub fn role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>, AuthError> {
        Ok(self
            .db()
            .query_row(
                "SELECT role FROM members WHERE tenant_id = ?1 AND user_id = ?2",
                params![tenant.as_str(), user_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Adds a member or changes a member's role. Demoting the last owner is refused.
    pub fn add_member(&self, tenant: &TenantId, user_id: &str, role: &str) -> Result<(), AuthError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if role != "owner" && last_owner(&tx, tenant, user_id)? {
            return Err(AuthError::LastOwner);
        }
        tx.execute(
            "INSERT INTO members (tenant_id, user_id, role) VALUES (?1, ?2, ?3) ON CONFLICT DO UPDATE SET role = excluded.role",
            params![tenant.as_str(), user_id, role],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a member; false if not a member. Removing the last owner is refused.
    pub fn remove_member(&self, tenant: &TenantId, user_id: &str) -> Result<bool, AuthError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if last_owner(&tx, tenant, user_id)? {
            return Err(AuthError::LastOwner);
        }
        let n =
            tx.execute("DELETE FROM members WHERE tenant_id = ?1 AND user_id = ?2", params![tenant.as_str(), user_id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn members(&self, tenant: &TenantId) -> Result<Vec<Member>, AuthError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT u.id, u.name, u.email, m.role FROM members m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = ?1 ORDER BY u.name",
        )?;
        let rows = stmt
            .query_map([tenant.as_str()], |r| {
                Ok(Member { user_id: r.get(0)?, name: r.get(1)?, email: r.get(2)?, role: r.get(3)? })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Inserts a tenant with its id, name and timestamps, and its owner as member (legacy import).
    /// Idempotent: an existing tenant with this id keeps its row; the owner membership is ensured.
    pub fn import_tenant(&self, tenant: &Tenant) -> Result<(), AuthError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO tenants (id, name, user_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant.uuid, tenant.name, tenant.user_id, tenant.created_at, tenant.updated_at],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO members (tenant_id, user_id, role) VALUES (?1, ?2, 'owner')",
            params![tenant.uuid, tenant.user_id],
        )?;
        tx.commit()?;
        Ok(())
    }
}
