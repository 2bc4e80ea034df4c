//! `finwise migrate`: copies everything from one store into an empty other one (a data dir into
//! PostgreSQL, or back), so that existing clients resume with their cursors and tokens: users
//! with their password hashes, tenants, memberships, refresh tokens, the JWT secret, and every
//! tenant's entities with their seqs, tombstones, idempotency records and head. Generic over
//! [`Store`]: the same code runs in both directions.
//!
//! Each tenant is copied in one target transaction. At the end every tenant's digest, entity
//! count and seq are compared between source and target; any difference is an error.

use std::collections::BTreeMap;

use crate::{
    auth::AuthStore,
    loads,
    storage::{Snapshot, StorageError, Store},
    TenantId,
};

/// What was copied.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub users: usize,
    pub tenants: usize,
    pub members: usize,
    pub refresh_tokens: usize,
    pub user_settings: usize,
    pub logos: usize,
    pub entities: usize,
    pub entries: usize,
}

/// Whether a store holds no users, tenants or tenant data.
pub fn is_empty(store: &dyn Store) -> anyhow::Result<bool> {
    let central = store.central();
    let n = central.tx(|db| {
        let mut n = 0;
        for table in ["users", "tenants"] {
            let row = db.query_opt(&format!("SELECT COUNT(*) FROM {table}"), &[])?;
            n += row.map(|r| r.int(0)).transpose()?.unwrap_or(0);
        }
        Ok::<_, StorageError>(n)
    })?;
    Ok(n == 0 && store.tenants_with_data()?.is_empty())
}

/// Copies `from` into the empty `to`, then verifies. `progress` gets one line per step.
pub fn copy(from: &dyn Store, to: &dyn Store, progress: &mut dyn FnMut(String)) -> anyhow::Result<Report> {
    if !is_empty(to)? {
        anyhow::bail!(
            "the target ({}) already holds users, tenants or tenant data: migrate into an empty one",
            to.location()
        );
    }
    let (src, dst) = (AuthStore::new(from.central()), AuthStore::new(to.central()));
    let mut report = Report::default();

    for (user, hash) in src.all_users()? {
        dst.import_user(&user, &hash)?;
        report.users += 1;
    }
    let mut members: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (tenant, user, role) in src.all_members()? {
        members.entry(tenant).or_default().push((user, role));
        report.members += 1;
    }
    for (tenant, legacy_open) in src.all_tenants()? {
        let m = members.remove(&tenant.uuid).unwrap_or_default();
        dst.copy_tenant(&tenant, legacy_open, &m)?;
        report.tenants += 1;
    }
    report.refresh_tokens = copy_refresh_tokens(from, to)?;
    for s in src.all_user_settings()? {
        dst.import_user_settings(&s)?;
        report.user_settings += 1;
    }
    for logo in src.all_logos()? {
        dst.import_logo(&logo)?;
        report.logos += 1;
    }
    to.adopt_jwt_secret(&from.jwt_secret()?)?;
    progress(format!(
        "copied {} users, {} tenants, {} memberships, {} refresh tokens, {} users' settings, {} logos and the JWT secret",
        report.users, report.tenants, report.members, report.refresh_tokens, report.user_settings, report.logos
    ));

    let tenants = from.tenants_with_data()?;
    for tenant in &tenants {
        let (head, records, entries) = from.read(tenant, |r| {
            let head = r.snapshot()?;
            let mut records = Vec::new();
            r.records(&mut |rec| {
                records.push(rec);
                Ok(())
            })?;
            let mut entries = Vec::new();
            r.entries(&mut |e| {
                entries.push(e);
                Ok(())
            })?;
            Ok((head, records, entries))
        })?;
        let mut db = to.open_tenant(tenant)?;
        db.write(|txn| {
            for rec in &records {
                txn.put_entity(rec)?;
            }
            for e in &entries {
                txn.record_entry(e)?;
            }
            txn.restore_head(&Snapshot { seq: head.seq, tombstone_floor: head.tombstone_floor })
        })?;
        report.entities += records.len();
        report.entries += entries.len();
        progress(format!(
            "tenant {tenant}: {} stored versions, {} idempotency records, seq {}",
            records.len(),
            entries.len(),
            head.seq
        ));
    }

    verify(from, to, &tenants)?;
    progress(format!("verified: every tenant's digest, entity count and seq match ({} tenants)", tenants.len()));
    Ok(report)
}

/// Compares every tenant's digest, live entity count and seq in both stores.
pub fn verify(from: &dyn Store, to: &dyn Store, tenants: &[TenantId]) -> anyhow::Result<()> {
    for tenant in tenants {
        let a = loads::data_status(from, tenant, Some(&[]))?;
        let b = loads::data_status(to, tenant, Some(&[]))?;
        if (a.tenant_digest.as_str(), a.entity_count, a.seq) != (b.tenant_digest.as_str(), b.entity_count, b.seq) {
            anyhow::bail!(
                "tenant {tenant} differs after the copy: source digest {} ({} entities, seq {}), target digest {} ({} entities, seq {})",
                a.tenant_digest,
                a.entity_count,
                a.seq,
                b.tenant_digest,
                b.entity_count,
                b.seq
            );
        }
    }
    let users = |s: &dyn Store| AuthStore::new(s.central()).all_users().map(|u| u.len());
    if users(from)? != users(to)? {
        anyhow::bail!("the number of users differs after the copy");
    }
    Ok(())
}

fn copy_refresh_tokens(from: &dyn Store, to: &dyn Store) -> anyhow::Result<usize> {
    let rows = from.central().tx(|db| {
        db.query("SELECT token_hash, user_id, family, expires_at_ms, used, revoked FROM refresh_tokens", &[])
    })?;
    to.central().tx(|db| {
        for r in &rows {
            let (hash, user, family) = (r.text(0)?, r.text(1)?, r.text(2)?);
            db.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at_ms, used, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                crate::sql_params![&hash, &user, &family, r.int(3)?, r.bool(4)?, r.bool(5)?],
            )?;
        }
        Ok::<_, StorageError>(())
    })?;
    Ok(rows.len())
}
