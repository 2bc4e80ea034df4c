//! The FinWise 0.4 tenant file (`finwiseTenantDB_<uuid>.db`: one table per entity type,
//! camelCase columns, `createdAt`/`updatedAt` as naive UTC text): one reader, shared by
//! `finwise import-legacy` and the HTTP import, and the writer of the export. See
//! `finwise-0.4-storage.md`.
//!
//! Reading never trusts the file: it is opened read-only and immutable with `trusted_schema`
//! off (a crafted file's triggers and views never run), only tables named like the nine entity
//! collections are read, by column name, and every row is normalised by the entity registry. The
//! export is generated from the registry too: the nine tables with the registry's fields as
//! columns (plus `createdAt` and `updatedAt`), values encoded as 0.4 stored them.

use std::path::Path;

use anyhow::Context;
use finwise_protocol::{
    digest::python_json,
    entity::{Kind, Presence},
    time, EntityType,
};
use rusqlite::{types::ValueRef, Connection, OpenFlags};
use serde_json::{Map, Value};

use crate::storage::{EntityRecord, Result as StorageResult, Store, TenantDb};
use crate::TenantId;

/// The entity types in the order 0.4 created their tables (referenced ones first).
pub const ENTITY_TYPES: [EntityType; 9] = [
    EntityType::AccountGroup,
    EntityType::CategoryGroup,
    EntityType::Recipient,
    EntityType::Tag,
    EntityType::AutomationRule,
    EntityType::PlanningTransaction,
    EntityType::Account,
    EntityType::Category,
    EntityType::Transaction,
];

/// The tables a file must have to count as a 0.4 tenant file (what 0.4's own import checked).
pub const REQUIRED_TABLES: [&str; 5] = ["accounts", "account_groups", "categories", "category_groups", "transactions"];

/// Opens a SQLite file for reading only: immutable (no journal, no locks, nothing written) and
/// with `trusted_schema` off, so that the file's own triggers, views and functions in its schema
/// never run. Fails with a clear message when the file is not a database.
pub fn open_ro(path: &Path) -> anyhow::Result<Connection> {
    let uri = format!("file:{}?immutable=1", path.display().to_string().replace('?', "%3f").replace('#', "%23"));
    let c = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    c.pragma_update(None, "trusted_schema", "OFF")?;
    c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .with_context(|| format!("{} is not a readable SQLite database", path.display()))?;
    Ok(c)
}

/// Whether `conn` has a table (not a view) named `name`.
pub fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |_| Ok(())).is_ok()
}

/// Reads every row of `table` as column name → SQLite value (none when there is no such table).
pub fn rows(conn: &Connection, table: &str) -> anyhow::Result<Vec<Map<String, Value>>> {
    if !has_table(conn, table) {
        return Ok(Vec::new());
    }
    // the names through `table_info`, as values: rusqlite's `column_names` panics on a name that
    // is not UTF-8, which a damaged or hostile file can hold (found by the legacy_import fuzzer)
    let mut names = Vec::new();
    let mut info = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let mut q = info.query([table])?;
    while let Some(row) = q.next()? {
        match row.get_ref(0)? {
            ValueRef::Text(t) => names
                .push(std::str::from_utf8(t).map_err(|_| anyhow::anyhow!("a column name is not UTF-8"))?.to_owned()),
            _ => anyhow::bail!("a column without a name"),
        }
    }
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
    if stmt.column_count() != names.len() {
        anyhow::bail!("the table's columns cannot be read");
    }
    let mut out = Vec::new();
    let mut q = stmt.query([])?;
    while let Some(row) = q.next()? {
        let mut m = Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(x) => Value::from(x),
                ValueRef::Real(x) => Value::from(x),
                ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(_) => Value::Null,
            };
            m.insert(n.clone(), v);
        }
        out.push(m);
    }
    Ok(out)
}

/// 0.4's naive UTC text (`2026-11-25 14:54:43.851705`) as the API form (`…T14:54:43.851705`).
pub fn naive_iso(s: Option<String>) -> String {
    match s {
        Some(s) => s.replacen(' ', "T", 1),
        None => crate::auth::naive_now(),
    }
}

/// `ms` as 0.4 stored timestamps: naive UTC, a space, six decimals.
pub fn naive_db(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// A 0.4 row as a wire payload: booleans, JSON lists and money converted by the field kinds.
fn payload(t: EntityType, row: &Map<String, Value>) -> Map<String, Value> {
    let mut p = Map::new();
    for field in t.def().fields {
        let Some(v) = row.get(field.name) else { continue };
        let v = match (field.kind, v) {
            (Kind::JsonList | Kind::StrList, Value::String(s)) => {
                serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
            }
            // NUMERIC columns hold binary doubles; 0.4 served them with two decimals.
            (Kind::Num | Kind::Money, Value::Number(n)) if n.is_f64() => {
                Value::from((n.as_f64().unwrap_or(0.0) * 100.0).round() / 100.0)
            }
            _ => v.clone(),
        };
        p.insert(field.name.to_owned(), v);
    }
    p
}

/// The version of a row: its `updatedAt`, else `createdAt`, else now.
fn version_ms(row: &Map<String, Value>) -> i64 {
    ["updatedAt", "createdAt"]
        .iter()
        .filter_map(|k| row.get(*k).and_then(Value::as_str).and_then(time::parse_ms))
        .next()
        .unwrap_or_else(time::now_ms)
}

/// One entity read from a 0.4 file: type, id, the normalised entity, its version.
pub type LegacyEntity = (EntityType, String, Map<String, Value>, i64);

/// Normalises a row; a value our protocol cannot hold in an optional or defaulted field (an
/// unknown enum value, a malformed date) is replaced by the field's default, with a warning.
pub fn normalize(t: EntityType, row: &Map<String, Value>, warnings: &mut Vec<String>) -> Result<LegacyEntity, String> {
    let id = row.get("id").and_then(Value::as_str).ok_or("a row without an id")?.to_owned();
    let ms = version_ms(row);
    let mut p = payload(t, row);
    for _ in 0..t.def().fields.len() {
        match t.def().normalize_owned(Value::Object(p.clone()), ms) {
            Ok(m) => return Ok((t, id, m, ms)),
            Err(e) => {
                let field = t.def().fields.iter().find(|f| f.name == e.field);
                match field {
                    Some(f) if !matches!(f.presence, Presence::Required) && p.contains_key(f.name) => {
                        warnings.push(format!(
                            "{} {id}: {} = {} cannot be kept ({}); the default is used",
                            t.as_str(),
                            f.name,
                            p[f.name],
                            e.message
                        ));
                        p.remove(f.name);
                    }
                    _ => return Err(format!("{} {id}: {e}", t.as_str())),
                }
            }
        }
    }
    Err(format!("{} {id}: cannot be normalised", t.as_str()))
}

/// What a 0.4 tenant file holds, read and normalised.
#[derive(Debug, Default)]
pub struct TenantFile {
    pub entities: Vec<LegacyEntity>,
    /// Values replaced by defaults.
    pub warnings: Vec<String>,
    /// Rows that could not be read (no id, a required field missing or invalid).
    pub errors: Vec<String>,
}

/// Reads the nine entity tables of an open 0.4 tenant file.
pub fn read_tenant(conn: &Connection) -> anyhow::Result<TenantFile> {
    let mut out = TenantFile::default();
    for t in ENTITY_TYPES {
        for row in rows(conn, t.collection()).with_context(|| format!("table {}", t.collection()))? {
            match normalize(t, &row, &mut out.warnings) {
                Ok(e) => out.entities.push(e),
                Err(e) => out.errors.push(e),
            }
        }
    }
    Ok(out)
}

/// Writes `entities` into a tenant in one transaction, each unless the tenant holds it at the
/// same or a newer version. Returns the types written (one per entity) and how many were kept.
pub fn write_entities(db: &mut dyn TenantDb, entities: &[LegacyEntity]) -> StorageResult<(Vec<EntityType>, usize)> {
    let now = time::now_ms();
    db.write(|txn| {
        let mut written = Vec::new();
        let mut unchanged = 0;
        for (t, id, entity, ms) in entities {
            let old = txn.entity(*t, id)?;
            if old.as_ref().is_some_and(|old| old.updated_at_ms >= *ms) {
                unchanged += 1;
                continue;
            }
            let seq = txn.next_seq();
            let created_seq = old.filter(|o| !o.deleted).map_or(seq, |o| o.created_seq);
            txn.put_entity(&EntityRecord {
                entity_type: *t,
                id: id.clone(),
                seq,
                updated_at_ms: *ms,
                deleted: false,
                data: serde_json::to_string(entity).expect("a JSON map serialises"),
                changed_at_ms: now,
                stamps: None,
                created_seq,
            })?;
            written.push(*t);
        }
        Ok((written, unchanged))
    })
}

/// The SQLite column type 0.4 used for a field kind.
fn column_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "INTEGER",
        Kind::Num | Kind::Money => "NUMERIC(10, 2)",
        Kind::Bool => "BOOLEAN",
        Kind::Timestamp => "DATETIME",
        Kind::StrList | Kind::JsonList => "JSON",
        Kind::Str | Kind::Date | Kind::Enum(_) => "VARCHAR",
    }
}

/// The columns of an entity type's 0.4 table besides the timestamps: the registry's fields.
fn columns(t: EntityType) -> impl Iterator<Item = &'static finwise_protocol::entity::Field> {
    t.def().fields.iter().filter(|f| f.name != "createdAt" && f.name != "updatedAt")
}

/// The 0.4 schema of one entity table.
fn create_table(t: EntityType) -> String {
    let mut cols: Vec<String> = columns(t)
        .map(|f| {
            let null = if matches!(f.presence, Presence::Nullable) { "" } else { " NOT NULL" };
            format!("\"{}\" {}{null}", f.name, column_type(f.kind))
        })
        .collect();
    cols.push("\"createdAt\" DATETIME".into());
    cols.push("\"updatedAt\" DATETIME".into());
    cols.push("PRIMARY KEY (id)".into());
    format!("CREATE TABLE {} (\n\t{}\n)", t.collection(), cols.join(", \n\t"))
}

/// A field's value as 0.4 stored it: booleans 0/1, JSON lists as Python writes them, numbers as
/// numbers, timestamps naive; `null` in a NOT NULL column becomes the type's zero.
fn column_value(f: &finwise_protocol::entity::Field, v: Option<&Value>) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    let v = v.unwrap_or(&Value::Null);
    let zero = || match f.kind {
        Kind::Int | Kind::Bool => Sql::Integer(0),
        Kind::Num | Kind::Money => Sql::Real(0.0),
        Kind::StrList | Kind::JsonList => Sql::Text("[]".into()),
        _ => Sql::Text(String::new()),
    };
    match (f.kind, v) {
        (_, Value::Null) if matches!(f.presence, Presence::Nullable) => Sql::Null,
        (_, Value::Null) => zero(),
        (Kind::Bool, Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        (Kind::StrList | Kind::JsonList, v) => Sql::Text(python_json(v)),
        (Kind::Timestamp, Value::String(s)) => time::parse_ms(s).map_or(Sql::Null, |ms| Sql::Text(naive_db(ms))),
        (_, Value::Number(n)) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or(0.0)),
        },
        (_, Value::String(s)) => Sql::Text(s.clone()),
        (_, other) => Sql::Text(other.to_string()),
    }
}

/// Writes the live entities of `tenant` as a 0.4 tenant file at `path` (which must not exist):
/// what 0.4's "SQLite import" takes back, so a household can always return to 0.4.
pub fn export_tenant(store: &dyn Store, tenant: &TenantId, path: &Path) -> anyhow::Result<usize> {
    let mut conn = Connection::open(path).with_context(|| format!("cannot create {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    let tx = conn.transaction()?;
    for t in ENTITY_TYPES {
        tx.execute_batch(&create_table(t))?;
        if t.def().fields.iter().any(|f| f.name == "name") {
            tx.execute_batch(&format!("CREATE INDEX ix_{0}_name ON {0} (name)", t.collection()))?;
        }
    }
    let insert = |t: EntityType| {
        let names: Vec<String> = columns(t)
            .map(|f| format!("\"{}\"", f.name))
            .chain(["\"createdAt\"".into(), "\"updatedAt\"".into()])
            .collect();
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        format!("INSERT INTO {} ({}) VALUES ({})", t.collection(), names.join(", "), marks.join(", "))
    };
    let inserts: std::collections::HashMap<EntityType, String> =
        ENTITY_TYPES.iter().map(|t| (*t, insert(*t))).collect();
    let mut n = 0;
    let mut failed = None;
    store.read(tenant, |r| {
        r.live_since(0, &mut |t, json| {
            let Ok(entity) = serde_json::from_str::<Map<String, Value>>(json) else { return true };
            let updated = entity.get("updated_at").and_then(Value::as_str).and_then(time::parse_ms);
            let created = entity.get("createdAt").and_then(Value::as_str).and_then(time::parse_ms).or(updated);
            let mut values: Vec<rusqlite::types::Value> =
                columns(t).map(|f| column_value(f, entity.get(f.name))).collect();
            for ms in [created, updated] {
                values.push(ms.map_or(rusqlite::types::Value::Null, |ms| rusqlite::types::Value::Text(naive_db(ms))));
            }
            let insert =
                tx.prepare_cached(&inserts[&t]).and_then(|mut s| s.execute(rusqlite::params_from_iter(values)));
            match insert {
                Ok(_) => {
                    n += 1;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    tx.commit()?;
    Ok(n)
}
