//! The per-entity commands (`finwise accounts add|edit|rm|ls|show`, …) and their tables.

use std::collections::HashMap;

use anyhow::{bail, Result};
use finwise_client::{Client, EntityType};
use serde_json::{json, Map, Value};

use super::{Ctx, EntityCommand};

/// The human name of a type in messages and the command that lists it.
pub(super) fn noun(t: EntityType) -> (&'static str, &'static str) {
    match t {
        EntityType::Account => ("account", "accounts"),
        EntityType::AccountGroup => ("group", "groups"),
        EntityType::Category => ("category", "categories"),
        EntityType::CategoryGroup => ("category group", "category-groups"),
        EntityType::Transaction => ("transaction", "transactions"),
        EntityType::Recipient => ("recipient", "recipients"),
        EntityType::Tag => ("tag", "tags"),
        EntityType::AutomationRule => ("rule", "rules"),
        EntityType::PlanningTransaction => ("planned transaction", "planning"),
    }
}

/// Short keys accepted on the command line, and which type a reference key points to.
fn resolve_key(t: EntityType, key: &str) -> (String, Option<EntityType>) {
    let k = match (t, key) {
        (EntityType::Account, "group") => "accountGroupId",
        (EntityType::Account, "type") => "accountType",
        (EntityType::Category, "group") => "categoryGroupId",
        (_, "account") => "accountId",
        (_, "category") => "categoryId",
        (_, "recipient") => "recipientId",
        (_, "parent") if t == EntityType::Category => "parentCategoryId",
        _ => key,
    };
    let target = match k {
        "accountGroupId" => Some(EntityType::AccountGroup),
        "accountId" | "transferToAccountId" => Some(EntityType::Account),
        "categoryId" | "parentCategoryId" | "toCategoryId" | "defaultCategoryId" => Some(EntityType::Category),
        "categoryGroupId" => Some(EntityType::CategoryGroup),
        "recipientId" => Some(EntityType::Recipient),
        _ => None,
    };
    (k.to_owned(), target)
}

fn parse_value(s: &str) -> Value {
    match serde_json::from_str::<Value>(s) {
        Ok(v) => v,
        Err(_) => Value::from(s),
    }
}

/// The string field `key` of an entity.
fn text_field<'a>(e: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str)
}

/// Finds one entity by id, unique id prefix (4+ characters) or name (case-insensitive; for
/// transactions also the description or payee).
fn find(client: &Client, t: EntityType, key: &str) -> Result<Map<String, Value>> {
    if let Some(e) = client.get(t, key)? {
        return Ok(e);
    }
    let all = client.list(t)?;
    let (one, plural) = noun(t);
    let id = |e| text_field(e, "id").unwrap_or_default();
    let names = |e| ["name", "description", "payee"].iter().filter_map(|k| text_field(e, k)).collect();
    match super::the_one(&all, key, id, names) {
        Ok(e) => Ok(e.clone()),
        Err(0) => bail!("no {one} matches '{key}': run `finwise {plural} ls`"),
        Err(_) => bail!("'{key}' matches several {plural}: use the id (see `finwise {plural} ls`)"),
    }
}

/// Parses KEY=VALUE arguments, resolving references given by name.
fn fields(client: &Client, t: EntityType, args: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            bail!("'{a}' is not KEY=VALUE (e.g. name=Giro balance=100)");
        };
        let (key, target) = resolve_key(t, k.trim());
        let fields = t.def().fields;
        if !fields.iter().any(|f| f.name == key || f.alias == Some(key.as_str())) {
            let names: Vec<&str> = fields.iter().map(|f| f.name).filter(|n| *n != "id").collect();
            bail!("{} has no field '{k}'; its fields: {}", noun(t).0, names.join(", "));
        }
        let value = match target {
            Some(rt) if !v.is_empty() && v != "null" => {
                Value::from(find(client, rt, v)?["id"].as_str().unwrap_or(v).to_owned())
            }
            _ => parse_value(v),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// Takes `opening=AMOUNT` out of an account's `add` arguments: the opening balance, booked as a
/// reconciliation transaction (the stored `balance` field is not what 0.4 shows; see `ledger`).
fn opening_balance(t: EntityType, args: Vec<String>) -> Result<(Vec<String>, Option<f64>)> {
    let mut opening = None;
    let mut rest = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some(("opening", v)) if t == EntityType::Account => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => opening = Some(x),
                _ => bail!("opening={v}: the opening balance is an amount, e.g. opening=1200.50"),
            },
            _ => rest.push(a),
        }
    }
    Ok((rest, opening))
}

/// Sensible values for required fields that the user did not give.
fn defaults(client: &Client, t: EntityType, f: &mut Map<String, Value>) -> Result<()> {
    fn set(f: &mut Map<String, Value>, k: &str, v: Value) {
        f.entry(k.to_owned()).or_insert(v);
    }
    let only = |rt: EntityType| -> Result<Option<String>> {
        let l = client.list(rt)?;
        Ok((l.len() == 1).then(|| l[0]["id"].as_str().unwrap_or_default().to_owned()))
    };
    match t {
        EntityType::Account => {
            set(f, "isActive", json!(true));
            set(f, "isOfflineBudget", json!(false));
            set(f, "balance", json!(0));
            set(f, "offset", json!(0));
            if !f.contains_key("accountGroupId") {
                match only(EntityType::AccountGroup)? {
                    Some(g) => {
                        f.insert("accountGroupId".into(), json!(g));
                    }
                    None => bail!(
                        "an account needs a group: add `group=NAME` (create one with `finwise groups add name=NAME`)"
                    ),
                }
            }
        }
        EntityType::AccountGroup | EntityType::CategoryGroup => {
            set(f, "sortOrder", json!(client.list(t)?.len()));
            if t == EntityType::CategoryGroup {
                set(f, "isIncomeGroup", json!(false));
            }
        }
        EntityType::Category => {
            for k in ["budgeted", "activity", "available"] {
                set(f, k, json!(0));
            }
            set(f, "isIncomeCategory", json!(false));
            set(f, "isHidden", json!(false));
            set(f, "isActive", json!(true));
            set(f, "sortOrder", json!(client.list(t)?.len()));
        }
        EntityType::Transaction => {
            let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
            set(f, "date", json!(today));
            let date = f["date"].clone();
            set(f, "valueDate", date);
            let income = f.get("amount").and_then(Value::as_f64).is_some_and(|a| a > 0.0);
            set(f, "type", json!(if income { "INCOME" } else { "EXPENSE" }));
            set(f, "runningBalance", json!(0));
            if !f.contains_key("accountId") {
                match only(EntityType::Account)? {
                    Some(a) => {
                        f.insert("accountId".into(), json!(a));
                    }
                    None => bail!("a transaction needs an account: add `account=NAME` (see `finwise accounts ls`)"),
                }
            }
            if !f.contains_key("amount") {
                bail!("a transaction needs an amount: add `amount=-12.50`");
            }
        }
        EntityType::PlanningTransaction => {
            set(f, "startDate", json!(chrono::Utc::now().format("%Y-%m-%d").to_string()));
            set(f, "amountType", json!("EXACT"));
            set(f, "recurrencePattern", json!("MONTHLY"));
            set(f, "recurrenceEndType", json!("NEVER"));
            set(f, "weekendHandling", json!("NONE"));
            set(f, "isActive", json!(true));
            set(f, "forecastOnly", json!(false));
            if !f.contains_key("accountId") {
                match only(EntityType::Account)? {
                    Some(a) => {
                        f.insert("accountId".into(), json!(a));
                    }
                    None => bail!("a planned transaction needs an account: add `account=NAME`"),
                }
            }
            if !f.contains_key("amount") {
                bail!("a planned transaction needs an amount: add `amount=-850`");
            }
        }
        EntityType::AutomationRule => {
            set(f, "stage", json!("DEFAULT"));
            set(f, "priority", json!(client.list(t)?.len()));
            set(f, "isActive", json!(true));
        }
        // no defaults beyond the registry's; listed, so that a new type must be decided here
        EntityType::Recipient | EntityType::Tag => {}
    }
    Ok(())
}

/// The fields of an entity type as `add`/`edit` take them: name, value type, whether required.
pub(super) fn fields_help(t: EntityType) -> String {
    use finwise_protocol::entity::{DefaultValue, Kind, Presence};
    let mut out = format!("Fields of {} (KEY=VALUE):\n", noun(t).0);
    let width = t.def().fields.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in t.def().fields.iter().filter(|f| f.name != "id") {
        let kind = match f.kind {
            Kind::Str => "text".to_owned(),
            Kind::Int => "whole number".to_owned(),
            Kind::Num => "number".to_owned(),
            Kind::Money => "amount, e.g. -12.50".to_owned(),
            Kind::Bool => "true or false".to_owned(),
            Kind::Date => "date YYYY-MM-DD".to_owned(),
            Kind::Timestamp => "date and time (ISO 8601)".to_owned(),
            Kind::Enum(options) => {
                let named: Vec<String> = options
                    .iter()
                    .map(|o| match finwise_protocol::entity::enum_label(o) {
                        Some(l) => format!("{o} ({l})"),
                        None => (*o).to_owned(),
                    })
                    .collect();
                format!("one of {}", named.join(", "))
            }
            Kind::StrList => "list of texts, e.g. [\"a\",\"b\"]".to_owned(),
            Kind::JsonList => "JSON list".to_owned(),
        };
        let presence = match f.presence {
            Presence::Required => "required".to_owned(),
            Presence::Nullable => "optional".to_owned(),
            Presence::Default(DefaultValue::Str(s)) => format!("default {s:?}"),
            Presence::Default(DefaultValue::Int(i)) => format!("default {i}"),
            Presence::Default(DefaultValue::Bool(b)) => format!("default {b}"),
            Presence::Default(DefaultValue::EmptyList) => "default []".to_owned(),
        };
        out.push_str(&format!("  {:width$}  {kind}; {presence}\n", f.name));
    }
    if t == EntityType::Account {
        out.push_str(&format!(
            "  {:width$}  amount (add only): the opening balance, booked as a reconciliation transaction\n\n\
             The balance shown is the sum of the account's transactions up to today (as FinWise 0.4 shows it);\n\
             the stored `balance` field is kept for 0.4 and not shown.\n",
            "opening"
        ));
    }
    out
}

/// Who sends a change just queued: a running `finwise sync --watch` on this store, or the user.
fn sent_by(client: &Client) -> String {
    match client.status().ok().and_then(|s| s.watcher) {
        Some(w) => format!("queued: the running `finwise sync --watch` (pid {}) sends it", w.pid),
        None => "queued: run `finwise sync` to send it".to_owned(),
    }
}

pub(super) fn entity(ctx: &Ctx, t: EntityType, cmd: EntityCommand) -> Result<()> {
    let client = ctx.client()?;
    let (one, plural) = noun(t);
    match cmd {
        EntityCommand::Add { fields: args } => {
            let (args, opening) = opening_balance(t, args)?;
            let mut f = fields(&client, t, &args)?;
            defaults(&client, t, &mut f)?;
            let e = client.create(t, Value::Object(f))?;
            if let Some(amount) = opening {
                // 0.4 has no opening-balance field: it books a reconciliation, as its app does
                let today = chrono::Local::now().format("%Y-%m-%d").to_string();
                client.create(
                    EntityType::Transaction,
                    json!({"accountId": e["id"], "amount": amount, "type": "RECONCILE", "date": today, "valueDate": today,
                        "description": "Opening balance", "payee": "Kontoabgleich", "isReconciliation": true,
                        "reconciled": true, "runningBalance": 0}),
                )?;
            }
            if ctx.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                let with = opening.map(|a| format!(" with an opening balance of {a:.2}")).unwrap_or_default();
                println!("added {one} {}{with} ({}); {}", label(&e), short(&e), sent_by(&client));
            }
        }
        EntityCommand::Edit { id, fields: args } => {
            let current = find(&client, t, &id)?;
            let id = current["id"].as_str().unwrap_or_default().to_owned();
            let f = fields(&client, t, &args)?;
            let e = client.update(t, &id, Value::Object(f))?;
            if ctx.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("changed {one} {} ({}); {}", label(&e), short(&e), sent_by(&client));
            }
        }
        EntityCommand::Rm { id } => {
            let current = find(&client, t, &id)?;
            let id = current["id"].as_str().unwrap_or_default().to_owned();
            client.delete(t, &id)?;
            if ctx.json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted {one} {} ({}); {}", label(&current), short(&current), sent_by(&client));
            }
        }
        EntityCommand::Show { id } => {
            let e = find(&client, t, &id)?;
            if ctx.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                let width = e.keys().map(|k| k.len()).max().unwrap_or(0);
                for (k, v) in &e {
                    let shown = if enum_field(t, k) { enum_cell(v) } else { cell(v) };
                    println!("{k:width$}  {shown}");
                }
            }
        }
        EntityCommand::Ls => {
            let list = client.list(t)?;
            if ctx.json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no {plural} yet: add one with `finwise {plural} add name=...` (or `finwise sync` to fetch)");
            } else {
                table(&client, t, &list)?;
            }
        }
    }
    Ok(())
}

fn short(e: &Map<String, Value>) -> String {
    e["id"].as_str().unwrap_or_default().chars().take(8).collect()
}

pub(super) fn label(e: &Map<String, Value>) -> String {
    for k in ["name", "description", "payee"] {
        if let Some(s) = e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            return format!("'{s}'");
        }
    }
    String::new()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A table cell of an enum field: its readable label, the wire value beside it (`checking (giro)`).
fn enum_cell(v: &Value) -> String {
    match v.as_str().and_then(|s| finwise_protocol::entity::enum_label(s).map(|l| (s, l))) {
        Some((s, l)) => format!("{l} ({s})"),
        None => cell(v),
    }
}

/// The computed columns (`@…`) of a table, by entity id: an account's balance today, a category's
/// budget, spending and what is available this month, by the 0.4 rules (`finwise_client::ledger`).
fn derived(client: &Client, t: EntityType) -> Result<HashMap<String, HashMap<&'static str, f64>>> {
    use finwise_client::ledger;
    if !matches!(t, EntityType::Account | EntityType::Category) {
        return Ok(HashMap::new());
    }
    let transactions = client.list(EntityType::Transaction)?;
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    Ok(match t {
        EntityType::Account => ledger::account_balances(&transactions, &today)
            .into_iter()
            .map(|(id, b)| (id, HashMap::from([("@balance", b)])))
            .collect(),
        _ => ledger::category_month(&transactions, &today[..7])
            .into_iter()
            .map(|(id, m)| {
                (id, HashMap::from([("@budgeted", m.budgeted), ("@spent", m.spent), ("@available", m.available)]))
            })
            .collect(),
    })
}

/// Whether `field` of `t` is an enum (shown with its label).
fn enum_field(t: EntityType, field: &str) -> bool {
    use finwise_protocol::entity::Kind;
    t.def().fields.iter().any(|f| f.name == field && matches!(f.kind, Kind::Enum(_)))
}

fn table(client: &Client, t: EntityType, list: &[Map<String, Value>]) -> Result<()> {
    let names = |rt: EntityType| -> Result<HashMap<String, String>> {
        Ok(client
            .list(rt)?
            .into_iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap_or_default().to_owned(),
                    e.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                )
            })
            .collect())
    };
    let (headers, cols): (Vec<&str>, Vec<(&str, Option<EntityType>)>) = match t {
        EntityType::Account => (
            vec!["ID", "NAME", "TYPE", "BALANCE", "GROUP", "UPDATED"],
            vec![
                ("id", None),
                ("name", None),
                ("accountType", None),
                ("@balance", None),
                ("accountGroupId", Some(EntityType::AccountGroup)),
                ("updated_at", None),
            ],
        ),
        EntityType::Category => (
            vec!["ID", "NAME", "BUDGETED", "SPENT", "AVAILABLE", "GROUP", "UPDATED"],
            vec![
                ("id", None),
                ("name", None),
                ("@budgeted", None),
                ("@spent", None),
                ("@available", None),
                ("categoryGroupId", Some(EntityType::CategoryGroup)),
                ("updated_at", None),
            ],
        ),
        EntityType::Transaction => (
            vec!["ID", "DATE", "ACCOUNT", "AMOUNT", "DESCRIPTION", "CATEGORY", "UPDATED"],
            vec![
                ("id", None),
                ("date", None),
                ("accountId", Some(EntityType::Account)),
                ("amount", None),
                ("description", None),
                ("categoryId", Some(EntityType::Category)),
                ("updated_at", None),
            ],
        ),
        EntityType::PlanningTransaction => (
            vec!["ID", "NAME", "ACCOUNT", "AMOUNT", "REPEATS", "FROM", "CATEGORY", "ACTIVE"],
            vec![
                ("id", None),
                ("name", None),
                ("accountId", Some(EntityType::Account)),
                ("amount", None),
                ("recurrencePattern", None),
                ("startDate", None),
                ("categoryId", Some(EntityType::Category)),
                ("isActive", None),
            ],
        ),
        EntityType::AutomationRule => (
            vec!["ID", "NAME", "STAGE", "PRIORITY", "ACTIVE", "UPDATED"],
            vec![
                ("id", None),
                ("name", None),
                ("stage", None),
                ("priority", None),
                ("isActive", None),
                ("updated_at", None),
            ],
        ),
        _ => (vec!["ID", "NAME", "UPDATED"], vec![("id", None), ("name", None), ("updated_at", None)]),
    };
    let mut lookups: HashMap<EntityType, HashMap<String, String>> = HashMap::new();
    for (_, rt) in &cols {
        if let Some(rt) = rt {
            if !lookups.contains_key(rt) {
                lookups.insert(*rt, names(*rt)?);
            }
        }
    }
    let derived = derived(client, t)?;
    let rows = list
        .iter()
        .map(|e| {
            cols.iter()
                .map(|(k, rt)| {
                    let v = e.get(*k).unwrap_or(&Value::Null);
                    match (k, rt) {
                        (&"id", _) => short(e),
                        (k, _) if k.starts_with('@') => {
                            let id = e["id"].as_str().unwrap_or_default();
                            format!("{:.2}", derived.get(id).and_then(|d| d.get(*k)).copied().unwrap_or(0.0))
                        }
                        (_, Some(rt)) => {
                            let id = v.as_str().unwrap_or_default();
                            lookups[rt].get(id).cloned().unwrap_or_else(|| id.chars().take(8).collect())
                        }
                        _ if enum_field(t, k) => enum_cell(v),
                        _ => cell(v),
                    }
                })
                .collect()
        })
        .collect();
    print_table(&headers, rows);
    Ok(())
}

pub(super) fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}
