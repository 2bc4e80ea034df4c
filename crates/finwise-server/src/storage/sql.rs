//! The central tables (accounts, tenants, members, refresh tokens) are queried with one set of
//! SQL for both engines, through this small layer: statements use PostgreSQL's `$1` placeholders
//! (rewritten to `?1` for SQLite), parameters are text, integers or booleans, rows come back as
//! [`Row`]s of [`Val`]s. Only the schemas differ per engine (each engine's migrations), in ways
//! the queries do not see: e.g. case-insensitive names are `COLLATE NOCASE` in SQLite and an ICU
//! collation in PostgreSQL, so `name = $1` means the same on both.
//!
//! The hot path (entities, sequence numbers, idempotency records) does not use this layer: each
//! engine implements [`super::WriteTxn`] and [`super::TenantReader`] natively.

use super::{Result, StorageError};

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Text(&'a str),
    Int(i64),
    Bool(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(s: &'a str) -> Self {
        Param::Text(s)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(s: &'a String) -> Self {
        Param::Text(s)
    }
}
impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

/// Builds a `&[Param]` from expressions: `params![a, b, 3]`.
#[macro_export]
macro_rules! sql_params {
    ($($p:expr),* $(,)?) => { &[$($crate::storage::sql::Param::from($p)),*][..] };
}

/// A column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Val>);

impl Row {
    fn col(&self, i: usize) -> Result<&Val> {
        self.0.get(i).ok_or_else(|| StorageError::Other(format!("no column {i}")))
    }
    pub fn text(&self, i: usize) -> Result<String> {
        match self.col(i)? {
            Val::Text(s) => Ok(s.clone()),
            v => Err(StorageError::Other(format!("column {i}: expected text, found {v:?}"))),
        }
    }
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.col(i)? {
            Val::Int(n) => Ok(*n),
            v => Err(StorageError::Other(format!("column {i}: expected an integer, found {v:?}"))),
        }
    }
    /// A boolean (SQLite stores them as integers).
    pub fn bool(&self, i: usize) -> Result<bool> {
        match self.col(i)? {
            Val::Bool(b) => Ok(*b),
            Val::Int(n) => Ok(*n != 0),
            v => Err(StorageError::Other(format!("column {i}: expected a boolean, found {v:?}"))),
        }
    }
}

/// Statements inside one transaction.
pub trait Sql {
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;
    /// Returns the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;
}

impl dyn Sql + '_ {
    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    pub fn exists(&mut self, sql: &str, params: &[Param<'_>]) -> Result<bool> {
        Ok(self.query_opt(sql, params)?.is_some())
    }
}

/// A database with the central tables.
pub trait SqlDb: Send + Sync {
    /// Runs `f` in one transaction; commits when it returns `Ok(true)`, rolls back otherwise.
    fn transaction_dyn(&self, f: &mut dyn FnMut(&mut dyn Sql) -> Result<bool>) -> Result<()>;
}

impl dyn SqlDb + '_ {
    /// Runs `f` in one transaction, committed when `f` returns `Ok`. Errors of `f` roll back.
    pub fn tx<T, E: From<StorageError>>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, E>) -> Result<T, E> {
        let mut f = Some(f);
        let mut out = None;
        self.transaction_dyn(&mut |sql| {
            let f = f.take().ok_or_else(|| StorageError::Other("transaction retried".into()))?;
            let r = f(sql);
            let commit = r.is_ok();
            out = Some(r);
            Ok(commit)
        })?;
        out.unwrap_or_else(|| Err(StorageError::Other("transaction did not run".into()).into()))
    }
}

/// Rewrites a statement for SQLite: `$N` placeholders become `?N` (quoted text is left alone),
/// and a trailing `FOR UPDATE` goes (SQLite's write transactions lock the whole database).
pub fn sqlite_dialect(sql: &str) -> String {
    let sql = sql.trim_end();
    let sql = sql.strip_suffix("FOR UPDATE").unwrap_or(sql);
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                out.push('?');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_outside_quotes_only() {
        assert_eq!(
            super::sqlite_dialect("SELECT $1, '$2%' FROM t WHERE a = $12 AND b LIKE '$2%' FOR UPDATE"),
            "SELECT ?1, '$2%' FROM t WHERE a = ?12 AND b LIKE '$2%' "
        );
    }
}
