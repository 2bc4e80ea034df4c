//! Tenants (households) and their members, in the central tables beside the accounts of
//! [`crate::auth`]: creating, renaming and deleting tenants, who may use them (roles; the
//! tenants tokenless 0.4 clients may use), and the members. A tenant keeps at least one owner.

use serde::Serialize;

use crate::{
    auth::{naive_now, AuthError, AuthStore},
    sql_params as params,
    storage::{
        sql::{Row, Sql},
        StorageError,
    },
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

fn tenant_row(r: &Row) -> Result<Tenant, StorageError> {
    Ok(Tenant {
        uuid: r.text(0)?,
        name: r.text(1)?,
        user_id: r.text(2)?,
        created_at: r.text(3)?,
        updated_at: r.text(4)?,
    })
}

fn tenant_rows(rows: Vec<Row>) -> Result<Vec<Tenant>, AuthError> {
    Ok(rows.iter().map(tenant_row).collect::<Result<Vec<_>, _>>()?)
}

/// Whether `user_id` is the only owner of the tenant (inside the caller's transaction).
fn last_owner(db: &mut dyn Sql, tenant: &TenantId, user_id: &str) -> Result<bool, AuthError> {
    // lock the tenant's owner rows, so two servers removing two owners at once take turns
    db.query(
        "SELECT user_id FROM members WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
        params![tenant.as_str()],
    )?;
    let r = db
        .query_opt(
            "SELECT COALESCE(SUM(CASE WHEN user_id = $2 THEN 1 ELSE 0 END), 0), COUNT(*) FROM members
             WHERE tenant_id = $1 AND role = 'owner'",
            params![tenant.as_str(), user_id],
        )?
        .ok_or_else(|| StorageError::Other("an aggregate returned no row".into()))?;
    Ok(r.int(0)? > 0 && r.int(1)? == 1)
}

/// The tenant and member methods of the store (tables `tenants` and `members`).
impl AuthStore {
    /// Tenants `user_id` is a member of; when `None` (0.4 legacy listing), all tenants legacy
    /// clients may use.
    /// `legacy_only`: only tenants legacy clients may use (the caller is one).
    pub fn tenants(&self, user_id: Option<&str>, legacy_only: bool) -> Result<Vec<Tenant>, AuthError> {
        self.tx(|db| match user_id {
            Some(u) => tenant_rows(db.query(
                &format!(
                    "SELECT {TENANT_COLS} FROM tenants t JOIN members m ON m.tenant_id = t.id
                     WHERE m.user_id = $1 AND ($2 = FALSE OR t.legacy_open) ORDER BY t.created_at"
                ),
                params![u, legacy_only],
            )?),
            None => tenant_rows(db.query(
                &format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.legacy_open ORDER BY t.created_at"),
                &[],
            )?),
        })
    }

    /// Every tenant (`finwise migrate`).
    pub fn all_tenants(&self) -> Result<Vec<(Tenant, bool)>, AuthError> {
        self.tx(|db| {
            let rows = db.query(&format!("SELECT {TENANT_COLS}, t.legacy_open FROM tenants t ORDER BY t.id"), &[])?;
            rows.iter().map(|r| Ok((tenant_row(r)?, r.bool(5)?))).collect()
        })
    }

    /// Every membership as `(tenant id, user id, role)` (`finwise migrate`).
    pub fn all_members(&self) -> Result<Vec<(String, String, String)>, AuthError> {
        self.tx(|db| {
            let rows = db.query("SELECT tenant_id, user_id, role FROM members ORDER BY tenant_id, user_id", &[])?;
            rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?))).collect()
        })
    }

    pub fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, AuthError> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1");
        self.tx(|db| Ok(db.query_opt(&sql, params![id.as_str()])?.map(|r| tenant_row(&r)).transpose()?))
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
        let now = naive_now();
        self.tx(|db| {
            let sql = format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1");
            if let Some(r) = db.query_opt(&sql, params![id.as_str()])? {
                let member =
                    db.exists("SELECT 1 FROM members WHERE tenant_id = $1 AND user_id = $2", params![id.as_str(), user_id])?;
                return if member { Ok(tenant_row(&r)?) } else { Err(AuthError::TenantIdTaken) };
            }
            if db.exists(
                "SELECT 1 FROM tenants t JOIN members m ON m.tenant_id = t.id WHERE m.user_id = $1 AND t.name = $2",
                params![user_id, name],
            )? {
                return Err(AuthError::TenantNameExists(name.into()));
            }
            db.execute(
                "INSERT INTO tenants (id, name, user_id, created_at, updated_at, legacy_open) VALUES ($1, $2, $3, $4, $4, $5)",
                params![id.as_str(), name, user_id, &now, legacy_open],
            )?;
            db.execute(
                "INSERT INTO members (tenant_id, user_id, role) VALUES ($1, $2, 'owner')",
                params![id.as_str(), user_id],
            )?;
            Ok(Tenant {
                name: name.into(),
                uuid: id.as_str().into(),
                user_id: user_id.into(),
                created_at: now.clone(),
                updated_at: now.clone(),
            })
        })
    }

    /// Renames a tenant, with the check `create_tenant` makes: `user_id` (the renaming user, or
    /// the tenant's creator for a legacy client) has no other tenant of that name.
    pub fn rename_tenant(&self, id: &TenantId, name: &str, user_id: Option<&str>) -> Result<Option<Tenant>, AuthError> {
        self.tx(|db| {
            let Some(creator) = db.query_opt("SELECT user_id FROM tenants WHERE id = $1", params![id.as_str()])? else {
                return Ok(None);
            };
            let creator = creator.text(0)?;
            let user = user_id.unwrap_or(&creator);
            if db.exists(
                "SELECT 1 FROM tenants t JOIN members m ON m.tenant_id = t.id WHERE m.user_id = $1 AND t.name = $2 AND t.id <> $3",
                params![user, name, id.as_str()],
            )? {
                return Err(AuthError::TenantNameExists(name.into()));
            }
            db.execute(
                "UPDATE tenants SET name = $2, updated_at = $3 WHERE id = $1",
                params![id.as_str(), name, &naive_now()],
            )?;
            let sql = format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1");
            Ok(db.query_opt(&sql, params![id.as_str()])?.map(|r| tenant_row(&r)).transpose()?)
        })
    }

    /// Whether tokenless (legacy) clients may use the tenant: one created by a legacy client or
    /// imported from 0.4, or one not created yet (the 0.4 frontend opens the socket of a new
    /// tenant before its `POST /tenants/` returns). Never a tenant created by a token user.
    pub fn legacy_open(&self, id: &TenantId) -> Result<bool, AuthError> {
        self.tx(|db| {
            let row = db.query_opt("SELECT legacy_open FROM tenants WHERE id = $1", params![id.as_str()])?;
            Ok(row.map(|r| r.bool(0)).transpose()?.unwrap_or(true))
        })
    }

    pub fn delete_tenant(&self, id: &TenantId) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute("DELETE FROM members WHERE tenant_id = $1", params![id.as_str()])?;
            db.execute("DELETE FROM logos WHERE tenant_id = $1", params![id.as_str()])?;
            db.execute("DELETE FROM tenants WHERE id = $1", params![id.as_str()])?;
            Ok(())
        })
    }

    /// The role of `user_id` in the tenant, if a member.
    pub fn role(&self, tenant: &TenantId, user_id: &str) -> Result<Option<String>, AuthError> {
        self.tx(|db| {
            let row = db.query_opt(
                "SELECT role FROM members WHERE tenant_id = $1 AND user_id = $2",
                params![tenant.as_str(), user_id],
            )?;
            Ok(row.map(|r| r.text(0)).transpose()?)
        })
    }

    /// Adds a member or changes a member's role. Demoting the last owner is refused.
    pub fn add_member(&self, tenant: &TenantId, user_id: &str, role: &str) -> Result<(), AuthError> {
        self.tx(|db| {
            if role != "owner" && last_owner(db, tenant, user_id)? {
                return Err(AuthError::LastOwner);
            }
            db.execute(
                "INSERT INTO members (tenant_id, user_id, role) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = excluded.role",
                params![tenant.as_str(), user_id, role],
            )?;
            Ok(())
        })
    }

    /// Removes a member; false if not a member. Removing the last owner is refused.
    pub fn remove_member(&self, tenant: &TenantId, user_id: &str) -> Result<bool, AuthError> {
        self.tx(|db| {
            if last_owner(db, tenant, user_id)? {
                return Err(AuthError::LastOwner);
            }
            let n = db.execute(
                "DELETE FROM members WHERE tenant_id = $1 AND user_id = $2",
                params![tenant.as_str(), user_id],
            )?;
            Ok(n > 0)
        })
    }

    pub fn members(&self, tenant: &TenantId) -> Result<Vec<Member>, AuthError> {
        self.tx(|db| {
            let rows = db.query(
                "SELECT u.id, u.name, u.email, m.role FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.tenant_id = $1 ORDER BY u.name",
                params![tenant.as_str()],
            )?;
            rows.iter()
                .map(|r| Ok(Member { user_id: r.text(0)?, name: r.text(1)?, email: r.text(2)?, role: r.text(3)? }))
                .collect()
        })
    }

    /// Inserts a tenant with its id, name and timestamps, and its owner as member (legacy import).
    /// Idempotent: an existing tenant with this id keeps its row; the owner membership is ensured.
    pub fn import_tenant(&self, tenant: &Tenant) -> Result<(), AuthError> {
        self.copy_tenant(tenant, true, &[(tenant.user_id.clone(), "owner".into())])
    }

    /// Inserts a tenant with its members unless it exists (`finwise migrate`, legacy import).
    pub fn copy_tenant(
        &self,
        tenant: &Tenant,
        legacy_open: bool,
        members: &[(String, String)],
    ) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO tenants (id, name, user_id, created_at, updated_at, legacy_open) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT DO NOTHING",
                params![&tenant.uuid, &tenant.name, &tenant.user_id, &tenant.created_at, &tenant.updated_at, legacy_open],
            )?;
            for (user, role) in members {
                db.execute(
                    "INSERT INTO members (tenant_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    params![&tenant.uuid, user, role],
                )?;
            }
            Ok(())
        })
    }
}
