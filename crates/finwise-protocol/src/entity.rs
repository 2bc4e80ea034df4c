//! The entity registry: one declarative definition per synced entity type.
//!
//! The sync engine never matches on an entity type. It asks the registry how to validate and
//! normalise a payload ([`EntityDef::normalize`]) and stores the result as one canonical JSON
//! object whose keys are exactly the definition's fields, in definition order, with the real
//! `updated_at` (`YYYY-MM-DDTHH:MM:SS.mmmZ`). That object is what every client receives.
//!
//! To add an entity type: add a variant to [`EntityType`] and one [`EntityDef`] to [`REGISTRY`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ts_rs::TS;

use crate::time;

/// Generates [`EntityType`] with its wire name and its collection key in loads.
macro_rules! entity_types {
    ($($variant:ident => $collection:literal),* $(,)?) => {
        /// The synced entity types, spelled as on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, TS)]
        pub enum EntityType { $($variant),* }

        impl EntityType {
            /// Every entity type, in the order of the load payload.
            pub const ALL: &'static [EntityType] = &[$(EntityType::$variant),*];

            /// The wire spelling (`"Account"`, …).
            pub fn as_str(self) -> &'static str {
                match self { $(EntityType::$variant => stringify!($variant)),* }
            }

            /// The key of this type's list in `initial_data_load.payload` (`"accounts"`, …).
            pub fn collection(self) -> &'static str {
                match self { $(EntityType::$variant => $collection),* }
            }
        }
    };
}

entity_types! {
    Account => "accounts",
    AccountGroup => "account_groups",
    Category => "categories",
    CategoryGroup => "category_groups",
    Recipient => "recipients",
    Tag => "tags",
    AutomationRule => "automation_rules",
    PlanningTransaction => "planning_transactions",
    Transaction => "transactions",
}

impl EntityType {
    /// Parses a wire spelling, case-insensitively as 0.4 did.
    pub fn parse(s: &str) -> Option<EntityType> {
        EntityType::ALL.iter().copied().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// This type's definition in the registry.
    pub fn def(self) -> &'static EntityDef {
        REGISTRY.iter().find(|d| d.entity_type == self).expect("every EntityType has an EntityDef in REGISTRY")
    }
}

impl std::fmt::Display for EntityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value type of one field, with its validation and normalisation.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer (integral floats and numeric strings are accepted, as 0.4 did).
    Int,
    /// A number, emitted as a float (`0.0`).
    Num,
    /// A number rounded to two decimals (money that 0.4 stored as `Numeric(10,2)`).
    Money,
    /// A boolean (`0`/`1` accepted).
    Bool,
    /// A calendar date `YYYY-MM-DD` (a datetime string is cut to its date).
    Date,
    /// A timestamp, normalised to `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    Timestamp,
    /// One of a fixed set of strings, matched case-insensitively, emitted in canonical spelling.
    Enum(&'static [&'static str]),
    /// A list of strings.
    StrList,
    /// A list of JSON values kept as they are (automation conditions and actions).
    JsonList,
}

/// Whether a field must be present, and what it becomes when it is absent or `null`.
#[derive(Debug, Clone, Copy)]
pub enum Presence {
    /// Must be present and not null.
    Required,
    /// May be absent or null; stays null.
    Nullable,
    /// May be absent or null; becomes this value.
    Default(DefaultValue),
}

/// A default that can live in a `static`.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Str(&'static str),
    Int(i64),
    Bool(bool),
    EmptyList,
}

impl DefaultValue {
    fn to_value(self) -> Value {
        match self {
            DefaultValue::Str(s) => Value::from(s),
            DefaultValue::Int(i) => Value::from(i),
            DefaultValue::Bool(b) => Value::from(b),
            DefaultValue::EmptyList => Value::Array(Vec::new()),
        }
    }
}

/// One field of an entity type.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The key on the wire (input and output).
    pub name: &'static str,
    /// Another accepted input key (`recipient_id` for `recipientId`).
    pub alias: Option<&'static str>,
    pub kind: Kind,
    pub presence: Presence,
}

const fn f(name: &'static str, kind: Kind, presence: Presence) -> Field {
    Field { name, alias: None, kind, presence }
}
const fn req(name: &'static str, kind: Kind) -> Field {
    f(name, kind, Presence::Required)
}
const fn opt(name: &'static str, kind: Kind) -> Field {
    f(name, kind, Presence::Nullable)
}
const fn def(name: &'static str, kind: Kind, d: DefaultValue) -> Field {
    f(name, kind, Presence::Default(d))
}
const fn recipient_id() -> Field {
    Field { name: "recipientId", alias: Some("recipient_id"), kind: Kind::Str, presence: Presence::Nullable }
}

/// The fields every entity carries, first and last.
const ID: Field = req("id", Kind::Str);
/// `updated_at` is filled by the engine with the version's timestamp; any input is replaced.
pub const UPDATED_AT: &str = "updated_at";

/// One entity type's definition: its fields in output order, `id` first.
#[derive(Debug)]
pub struct EntityDef {
    pub entity_type: EntityType,
    pub fields: &'static [Field],
    /// Fields that take `updated_at`'s value too (Transaction's naive `updatedAt` of 0.4).
    pub mirrors_updated_at: &'static [&'static str],
}

const ACCOUNT_TYPES: &[&str] = &[
    "giro",
    "tagesgeld",
    "festgeld",
    "spar",
    "kreditkarte",
    "depot",
    "bauspar",
    "darlehen",
    "geschaeft",
    "gemeinschaft",
    "fremdwaehrung",
    "virtuell",
    "bar",
    "sonstiges",
];
const TRANSACTION_TYPES: &[&str] = &["EXPENSE", "INCOME", "ACCOUNTTRANSFER", "CATEGORYTRANSFER", "RECONCILE"];

/// English labels of the registry's enum values, for people (the CLI's tables and help). The
/// values stay on the wire as 0.4 writes them; every value has a label (tested).
const ENUM_LABELS: &[(&str, &str)] = &[
    ("giro", "checking"),
    ("tagesgeld", "instant-access savings"),
    ("festgeld", "fixed deposit"),
    ("spar", "savings"),
    ("kreditkarte", "credit card"),
    ("depot", "securities"),
    ("bauspar", "building savings"),
    ("darlehen", "loan"),
    ("geschaeft", "business"),
    ("gemeinschaft", "joint account"),
    ("fremdwaehrung", "foreign currency"),
    ("virtuell", "virtual"),
    ("bar", "cash"),
    ("sonstiges", "other"),
    ("EXPENSE", "expense"),
    ("INCOME", "income"),
    ("ACCOUNTTRANSFER", "transfer between accounts"),
    ("CATEGORYTRANSFER", "budget transfer between categories"),
    ("RECONCILE", "reconciliation"),
    ("PRE", "before the others"),
    ("DEFAULT", "normal"),
    ("POST", "after the others"),
    ("all", "all conditions"),
    ("any", "any condition"),
    ("EXACT", "exact amount"),
    ("APPROXIMATE", "approximate amount"),
    ("RANGE", "amount range"),
    ("ONCE", "once"),
    ("DAILY", "daily"),
    ("WEEKLY", "weekly"),
    ("BIWEEKLY", "every two weeks"),
    ("MONTHLY", "monthly"),
    ("QUARTERLY", "quarterly"),
    ("YEARLY", "yearly"),
    ("NEVER", "never ends"),
    ("COUNT", "after a number of times"),
    ("DATE", "on an end date"),
    ("NONE", "keep the date"),
    ("BEFORE", "move to the working day before"),
    ("AFTER", "move to the working day after"),
];

/// The English label of an enum value of the registry (`giro` → `checking`).
pub fn enum_label(value: &str) -> Option<&'static str> {
    ENUM_LABELS.iter().find(|(v, _)| *v == value).map(|(_, l)| *l)
}

use DefaultValue as D;
use Kind::*;

/// The registry: every synced entity type.
pub static REGISTRY: &[EntityDef] = &[
    EntityDef {
        entity_type: EntityType::Account,
        fields: &[
            ID,
            req("name", Str),
            opt("description", Str),
            opt("note", Str),
            def("accountType", Enum(ACCOUNT_TYPES), D::Str("sonstiges")),
            req("isActive", Bool),
            req("isOfflineBudget", Bool),
            req("accountGroupId", Str),
            def("sortOrder", Int, D::Int(0)),
            opt("iban", Str),
            req("balance", Num),
            opt("creditLimit", Num),
            req("offset", Int),
            opt("logo_path", Str),
        ],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::AccountGroup,
        fields: &[ID, req("name", Str), req("sortOrder", Int), opt("logo_path", Str)],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::Category,
        fields: &[
            ID,
            req("name", Str),
            opt("icon", Str),
            req("budgeted", Num),
            req("activity", Num),
            req("available", Num),
            req("isIncomeCategory", Bool),
            req("isHidden", Bool),
            req("isActive", Bool),
            req("sortOrder", Int),
            opt("categoryGroupId", Str),
            opt("parentCategoryId", Str),
            def("isSavingsGoal", Bool, D::Bool(false)),
            opt("goalDate", Date),
            opt("targetAmount", Num),
            opt("priority", Int),
            opt("proportion", Num),
            opt("monthlyAmount", Num),
            opt("note", Str),
        ],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::CategoryGroup,
        fields: &[ID, req("name", Str), req("sortOrder", Int), req("isIncomeGroup", Bool)],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::Recipient,
        fields: &[ID, req("name", Str), opt("defaultCategoryId", Str), opt("note", Str)],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::Tag,
        fields: &[ID, req("name", Str), opt("parentTagId", Str), opt("color", Str), opt("icon", Str)],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::AutomationRule,
        fields: &[
            ID,
            req("name", Str),
            opt("description", Str),
            req("stage", Enum(&["PRE", "DEFAULT", "POST"])),
            def("conditions", JsonList, D::EmptyList),
            def("actions", JsonList, D::EmptyList),
            req("priority", Int),
            req("isActive", Bool),
            def("conditionLogic", Enum(&["all", "any"]), D::Str("all")),
        ],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::PlanningTransaction,
        fields: &[
            ID,
            req("name", Str),
            req("accountId", Str),
            opt("categoryId", Str),
            def("tagIds", StrList, D::EmptyList),
            recipient_id(),
            req("amount", Num),
            req("amountType", Enum(&["EXACT", "APPROXIMATE", "RANGE"])),
            opt("approximateAmount", Num),
            opt("minAmount", Num),
            opt("maxAmount", Num),
            opt("note", Str),
            req("startDate", Date),
            opt("valueDate", Date),
            opt("endDate", Date),
            req("recurrencePattern", Enum(&["ONCE", "DAILY", "WEEKLY", "BIWEEKLY", "MONTHLY", "QUARTERLY", "YEARLY"])),
            opt("recurrenceCount", Int),
            req("recurrenceEndType", Enum(&["NEVER", "COUNT", "DATE"])),
            opt("executionDay", Int),
            req("weekendHandling", Enum(&["NONE", "BEFORE", "AFTER"])),
            opt("transactionType", Enum(TRANSACTION_TYPES)),
            opt("counterPlanningTransactionId", Str),
            opt("transferToAccountId", Str),
            opt("transferToCategoryId", Str),
            req("isActive", Bool),
            req("forecastOnly", Bool),
            def("autoExecute", Bool, D::Bool(false)),
        ],
        mirrors_updated_at: &[],
    },
    EntityDef {
        entity_type: EntityType::Transaction,
        fields: &[
            ID,
            req("accountId", Str),
            opt("categoryId", Str),
            req("date", Date),
            req("valueDate", Date),
            req("amount", Money),
            def("description", Str, D::Str("")),
            opt("note", Str),
            def("tagIds", StrList, D::EmptyList),
            req("type", Str),
            req("runningBalance", Money),
            opt("counterTransactionId", Str),
            opt("planningTransactionId", Str),
            def("isReconciliation", Bool, D::Bool(false)),
            def("isCategoryTransfer", Bool, D::Bool(false)),
            opt("transferToAccountId", Str),
            def("reconciled", Bool, D::Bool(false)),
            opt("toCategoryId", Str),
            opt("payee", Str),
            recipient_id(),
            opt("createdAt", Timestamp),
        ],
        mirrors_updated_at: &["updatedAt"],
    },
];

/// Why a payload was refused; `field` names the offending key (dotted for nested keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { field: field.into(), message: message.into() }
    }
}

/// Maximum length of any string field, in bytes (a sanity bound, far above real data).
pub const MAX_STRING_BYTES: usize = 64 * 1024;

impl EntityDef {
    /// Validates `payload` and returns the canonical object: exactly this type's fields in
    /// definition order, defaults applied, unknown keys dropped, `updated_at` set to
    /// `updated_at_ms`. `payload` must be the entity object of a create or update.
    pub fn normalize(&self, payload: &Value, updated_at_ms: i64) -> Result<Map<String, Value>, ValidationError> {
        self.normalize_owned(payload.clone(), updated_at_ms)
    }

    /// [`EntityDef::normalize`] of a payload the caller gives away: its values move into the
    /// result instead of being copied (the server's ingest path).
    pub fn normalize_owned(&self, payload: Value, updated_at_ms: i64) -> Result<Map<String, Value>, ValidationError> {
        let Value::Object(mut obj) = payload else {
            return Err(ValidationError::new("payload", "must be an object with the entity's fields"));
        };
        // takes a key's value unless it is absent or null
        let mut take = |key: &str| obj.get_mut(key).filter(|v| !v.is_null()).map(std::mem::take);
        let mut out = Map::with_capacity(self.fields.len() + 2);
        for field in self.fields {
            let raw = take(field.name).or_else(|| field.alias.and_then(&mut take));
            let value = match (raw, field.presence) {
                (Some(v), _) => coerce(field, v)?,
                (None, Presence::Required) => {
                    return Err(ValidationError::new(field.name, "field required"));
                }
                (None, Presence::Nullable) => Value::Null,
                (None, Presence::Default(d)) => d.to_value(),
            };
            out.insert(field.name.to_owned(), value);
        }
        let stamp = Value::from(time::format_ms(updated_at_ms));
        out.insert(UPDATED_AT.to_owned(), stamp.clone());
        for mirror in self.mirrors_updated_at {
            out.insert((*mirror).to_owned(), stamp.clone());
        }
        if let Some(Value::Null) | None = out.get("createdAt") {
            if self.fields.iter().any(|f| f.name == "createdAt") {
                out.insert("createdAt".to_owned(), stamp);
            }
        }
        Ok(out)
    }

    /// The fields that carry their own stamp in a field-level merge: all but `id`.
    pub fn stamped_fields(&self) -> impl Iterator<Item = &Field> + '_ {
        self.fields.iter().filter(|f| f.name != ID.name)
    }

    /// The first of `names` that a field-level update cannot name (not a field of this type, or
    /// `id`, `updated_at` and mirrors of it).
    pub fn unknown_field<'n>(&self, names: &'n [String]) -> Option<&'n str> {
        names
            .iter()
            .find(|n| !self.stamped_fields().any(|f| f.name == n.as_str() || f.alias == Some(n.as_str())))
            .map(String::as_str)
    }

    /// Validates the listed fields of a field-level update (names checked by
    /// [`EntityDef::unknown_field`]) and returns them normalised, under their wire names, in
    /// definition order. A listed field missing from `payload` is an error; `null` clears a
    /// nullable field and resets one with a default.
    pub fn normalize_fields(&self, payload: &Value, names: &[String]) -> Result<Map<String, Value>, ValidationError> {
        let obj = payload
            .as_object()
            .ok_or_else(|| ValidationError::new("payload", "must be an object with the entity's fields"))?;
        let mut out = Map::with_capacity(names.len());
        for field in self.stamped_fields() {
            let listed = |n: &String| n == field.name || Some(n.as_str()) == field.alias;
            if !names.iter().any(listed) {
                continue;
            }
            let raw = obj.get(field.name).or_else(|| field.alias.and_then(|a| obj.get(a)));
            let value = match (raw, field.presence) {
                (None, _) => {
                    return Err(ValidationError::new(field.name, "listed in fields but missing from the payload"))
                }
                (Some(v), _) if !v.is_null() => coerce(field, v.clone())?,
                (Some(_), Presence::Required) => return Err(ValidationError::new(field.name, "field required")),
                (Some(_), Presence::Nullable) => Value::Null,
                (Some(_), Presence::Default(d)) => d.to_value(),
            };
            out.insert(field.name.to_owned(), value);
        }
        Ok(out)
    }

    /// Checks an entity assembled from normalised parts (a field-level merge) as a whole: exactly
    /// this type's fields, each required one present and not null; then stamps it with
    /// `updated_at_ms` (`updated_at` and its mirrors). The values themselves were validated when
    /// they were normalised.
    pub fn check_and_stamp(&self, entity: &mut Map<String, Value>, updated_at_ms: i64) -> Result<(), ValidationError> {
        for field in self.fields {
            match entity.get(field.name) {
                None => return Err(ValidationError::new(field.name, "missing")),
                Some(Value::Null) if matches!(field.presence, Presence::Required) => {
                    return Err(ValidationError::new(field.name, "field required"))
                }
                _ => {}
            }
        }
        let known = |k: &String| {
            self.fields.iter().any(|f| f.name == k.as_str())
                || k == UPDATED_AT
                || self.mirrors_updated_at.contains(&k.as_str())
        };
        if let Some(k) = entity.keys().find(|k| !known(k)) {
            return Err(ValidationError::new(k.clone(), "not a field of this type"));
        }
        let stamp = Value::from(time::format_ms(updated_at_ms));
        for mirror in self.mirrors_updated_at {
            entity.insert((*mirror).to_owned(), stamp.clone());
        }
        entity.insert(UPDATED_AT.to_owned(), stamp);
        Ok(())
    }

    /// The entity's content without its timestamps: what two versions must share to be "the same".
    /// Compact JSON of the other keys in their order (stored in idempotency records through the
    /// content hash, so these bytes must not change).
    pub fn content_key(&self, entity: &Map<String, Value>) -> String {
        struct Content<'a>(&'a EntityDef, &'a Map<String, Value>);
        impl Serialize for Content<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let stamp = |k: &str| k == UPDATED_AT || self.0.mirrors_updated_at.contains(&k);
                s.collect_map(self.1.iter().filter(|(k, _)| !stamp(k)))
            }
        }
        serde_json::to_string(&Content(self, entity)).expect("a JSON map serialises")
    }
}

fn type_error(field: &Field, expected: &str) -> ValidationError {
    ValidationError::new(field.name, format!("expected {expected}"))
}

/// Checks and converts one value; takes it so that a valid string or list is moved, not copied.
fn coerce(field: &Field, v: Value) -> Result<Value, ValidationError> {
    match field.kind {
        Kind::Str => match &v {
            Value::String(s) if s.len() > MAX_STRING_BYTES => {
                Err(ValidationError::new(field.name, format!("longer than {MAX_STRING_BYTES} bytes")))
            }
            Value::String(_) => Ok(v),
            Value::Number(n) => Ok(Value::from(n.to_string())),
            _ => Err(type_error(field, "a string")),
        },
        Kind::Int => as_int(&v).map(Value::from).ok_or_else(|| type_error(field, "an integer")),
        Kind::Num => number(field, &v).map(Value::from),
        // rounding stays exact below MAX_NUMBER (x * 100 < 2^53 · 100 never overflows)
        Kind::Money => number(field, &v).map(|x| Value::from((x * 100.0).round() / 100.0)),
        Kind::Bool => match &v {
            Value::Bool(_) => Ok(v),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(Value::Bool(true)),
            _ => Err(type_error(field, "a boolean")),
        },
        Kind::Date => {
            let s = v.as_str().ok_or_else(|| type_error(field, "a date YYYY-MM-DD"))?;
            let d = s.get(..10).filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
            d.map(Value::from).ok_or_else(|| type_error(field, "a date YYYY-MM-DD"))
        }
        Kind::Timestamp => {
            let ms = v.as_str().and_then(time::parse_ms).ok_or_else(|| type_error(field, "an ISO-8601 timestamp"))?;
            Ok(Value::from(time::format_ms(ms)))
        }
        Kind::Enum(options) => {
            let s = v.as_str().ok_or_else(|| type_error(field, "a string"))?;
            options
                .iter()
                .find(|o| o.eq_ignore_ascii_case(s))
                .map(|o| Value::from(*o))
                .ok_or_else(|| ValidationError::new(field.name, format!("must be one of {}", options.join(", "))))
        }
        Kind::StrList => {
            let items = v.as_array().ok_or_else(|| type_error(field, "a list of strings"))?;
            if items.iter().all(Value::is_string) {
                Ok(v)
            } else {
                Err(type_error(field, "a list of strings"))
            }
        }
        Kind::JsonList => {
            if v.is_array() {
                Ok(v)
            } else {
                Err(type_error(field, "a list"))
            }
        }
    }
}

/// Largest magnitude (exclusive) of a number or amount: 10^15, i.e. a trillion with room for
/// cents. Larger values cannot round-trip through two-decimal money (or JSON: 1e309 is `null`).
pub const MAX_NUMBER: f64 = 1e15;

fn number(field: &Field, v: &Value) -> Result<f64, ValidationError> {
    let x = as_f64(v).ok_or_else(|| type_error(field, "a number"))?;
    if x.abs() >= MAX_NUMBER {
        return Err(ValidationError::new(field.name, format!("must be between -10^15 and 10^15 (got {x:e})")));
    }
    Ok(x)
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15).map(|x| x as i64))
        }
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_out_of_range_are_refused_not_stored_as_null() {
        let money = req("amount", Kind::Money);
        let num = req("balance", Kind::Num);
        for big in [json!(1e307), json!(-1e15), json!("1e16"), json!(1e15)] {
            let e = coerce(&money, big.clone()).unwrap_err();
            assert_eq!(e.field, "amount");
            assert!(coerce(&num, big).is_err());
        }
        assert_eq!(coerce(&money, json!(999_999_999_999_999.0)).unwrap(), json!(999_999_999_999_999.0));
        assert_eq!(coerce(&money, json!(0.125)).unwrap(), json!(0.13));
    }

    #[test]
    fn content_key_is_the_compact_json_without_the_stamps() {
        // the key feeds the content hash kept in idempotency records: it must stay these bytes
        let old = |d: &EntityDef, e: &Map<String, Value>| {
            let mut m = e.clone();
            m.remove(UPDATED_AT);
            for mirror in d.mirrors_updated_at {
                m.remove(*mirror);
            }
            Value::Object(m).to_string()
        };
        for d in REGISTRY {
            let mut e = Map::new();
            for (i, f) in d.fields.iter().enumerate() {
                e.insert(f.name.to_owned(), json!(format!("v{i} \"quoted\" é")));
            }
            e.insert(UPDATED_AT.to_owned(), json!("2026-12-03T00:00:00.000Z"));
            for mirror in d.mirrors_updated_at {
                e.insert((*mirror).to_owned(), json!("2026-12-03T00:00:00.000Z"));
            }
            assert_eq!(d.content_key(&e), old(d, &e));
            assert!(!d.content_key(&e).contains("2026-12-03"));
        }
        assert_eq!(EntityType::Tag.def().content_key(&Map::new()), "{}");
    }

    #[test]
    fn every_enum_value_has_a_label() {
        for d in REGISTRY {
            for f in d.fields {
                if let Kind::Enum(values) = f.kind {
                    for v in values {
                        assert!(
                            enum_label(v).is_some(),
                            "{}.{} value {v} has no label",
                            d.entity_type.as_str(),
                            f.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_entity_type_has_a_definition_starting_with_id() {
        for t in EntityType::ALL {
            assert_eq!(t.def().fields[0].name, "id", "{t}");
            assert_eq!(EntityType::parse(&t.as_str().to_lowercase()), Some(*t));
        }
    }

    #[test]
    fn account_defaults_unknown_keys_and_float_output() {
        let p = json!({"id":"a","name":"Acc","isActive":true,"isOfflineBudget":false,
            "accountGroupId":"g","balance":0,"offset":0,"image":"x","accountType":"GIRO"});
        let out = EntityType::Account.def().normalize(&p, 0).unwrap();
        let s = Value::Object(out).to_string();
        assert_eq!(
            s,
            r#"{"id":"a","name":"Acc","description":null,"note":null,"accountType":"giro","isActive":true,"isOfflineBudget":false,"accountGroupId":"g","sortOrder":0,"iban":null,"balance":0.0,"creditLimit":null,"offset":0,"logo_path":null,"updated_at":"1970-01-01T00:00:00.000Z"}"#
        );
    }

    #[test]
    fn validation_names_the_field() {
        let p = json!({"id":"a","name":"Acc","isActive":"yes"});
        let e = EntityType::Account.def().normalize(&p, 0).unwrap_err();
        assert_eq!(e.field, "isActive");
        let e = EntityType::Tag.def().normalize(&json!({"id":"t"}), 0).unwrap_err();
        assert_eq!(e.field, "name");
    }

    #[test]
    fn transaction_rounds_money_and_accepts_recipient_alias() {
        let p = json!({"id":"t","accountId":"a","date":"2026-01-02","valueDate":"2026-01-02T00:00:00Z",
            "amount":-10.499,"type":"EXPENSE","runningBalance":1,"recipient_id":"r","description":null});
        let out = EntityType::Transaction.def().normalize(&p, 1000).unwrap();
        assert_eq!(out["amount"], json!(-10.5));
        assert_eq!(out["recipientId"], json!("r"));
        assert_eq!(out["description"], json!(""));
        assert_eq!(out["valueDate"], json!("2026-01-02"));
        assert_eq!(out["updatedAt"], json!("1970-01-01T00:00:01.000Z"));
        assert_eq!(out["createdAt"], json!("1970-01-01T00:00:01.000Z"));
    }
}
