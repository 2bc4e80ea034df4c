//! Field-level merge (protocol v2): one stamp per field, and the rule that decides a field-level
//! update field by field. Shared by the server (which decides) and the clients (which lay their
//! pending edits over what the server sends); `testdata/field-merge-vectors.json` holds the cases
//! every implementation must agree on.
//!
//! A live entity has its version stamp `V` (its `updated_at`) and a stamp `s_f` per field (see
//! [`crate::EntityDef::stamped_fields`]): the `updated_at` of the write that set the field. A
//! create or whole update sets every stamp to its own. A field-level update at `u` takes a listed
//! field when `u > s_f`, or when `u == s_f` and its value differs (the later arrival wins the tie,
//! restamped to `s_f + 1` ms, as whole versions are); otherwise the field keeps value and stamp.
//! When something was taken the new `V` is the latest field stamp, or `V + 1` ms when that is not
//! later than the old `V`: every stored version of an entity has a distinct, increasing
//! `updated_at`, so two replicas with equal `updated_at` hold equal content and the tenant digest
//! stays a proof of convergence.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::entity::EntityDef;

/// The per-field stamps of a live entity, stored compactly: the fields listed carry their own
/// stamp, the others the *base* stamp (`"*"` in the stored form), or the entity's `updated_at`
/// when there is no base. Empty (the common case: no field-level edit since the last whole
/// write) means every field carries `updated_at` ("uniform"). After a one-field edit the stored
/// form is `{"*": <the older stamp>, "note": <the edit's>}` whatever the entity's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamps {
    base: Option<i64>,
    fields: BTreeMap<String, i64>,
}

/// The key of the base stamp in the stored form (never a field name).
const BASE: &str = "*";

impl Stamps {
    /// Reads stored stamps (`None`: uniform). Stamps that do not parse count as uniform: the
    /// entity then merges as if its last write had been a whole one.
    pub fn parse(stored: Option<&str>) -> Stamps {
        let mut fields: BTreeMap<String, i64> = stored.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        Stamps { base: fields.remove(BASE), fields }
    }

    /// The stored form: `None` when uniform, else a JSON object `{"*": ms, "field": ms}`.
    pub fn to_json(&self) -> Option<String> {
        if self.is_uniform() {
            return None;
        }
        let mut out = serde_json::Map::new();
        if let Some(b) = self.base {
            out.insert(BASE.to_owned(), b.into());
        }
        for (k, v) in &self.fields {
            out.insert(k.clone(), (*v).into());
        }
        Some(Value::Object(out).to_string())
    }

    pub fn is_uniform(&self) -> bool {
        self.base.is_none() && self.fields.is_empty()
    }

    /// The stamp of `field` of an entity whose `updated_at` is `updated_at_ms`.
    pub fn get(&self, field: &str, updated_at_ms: i64) -> i64 {
        self.fields.get(field).copied().or(self.base).unwrap_or(updated_at_ms)
    }

    /// The compact form of `all` (every stamped field's stamp) for an entity at `updated_at_ms`:
    /// the most common stamp is the base (none when that is `updated_at_ms`), the rest listed.
    fn compact(all: &[(&'static str, i64)], updated_at_ms: i64) -> Stamps {
        let mut counts: Vec<(i64, usize)> = Vec::new();
        for (_, s) in all {
            match counts.iter_mut().find(|(c, _)| c == s) {
                Some((_, n)) => *n += 1,
                None => counts.push((*s, 1)),
            }
        }
        // the most common stamp; on a tie, the entity's own (no base needed)
        let common = counts.iter().max_by_key(|(s, n)| (*n, *s == updated_at_ms)).map_or(updated_at_ms, |(s, _)| *s);
        let base = (common != updated_at_ms).then_some(common);
        let fields = all.iter().filter(|(_, s)| *s != common).map(|(n, s)| ((*n).to_owned(), *s)).collect();
        Stamps { base, fields }
    }
}

/// The result of a merge that took at least one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The stored entity with the taken fields replaced (its timestamps still the old ones: the
    /// caller normalises it with `updated_at_ms`).
    pub entity: Map<String, Value>,
    pub stamps: Stamps,
    /// The new version stamp.
    pub updated_at_ms: i64,
}

/// Decides the `fields` of `incoming` (normalised values, written at `at_ms`) against the live
/// entity `stored` (version `stored_at_ms`, `stamps`). `None`: no field was taken, nothing
/// changes. Fields listed but absent from `incoming` are skipped.
pub fn merge_fields<'f>(
    def: &EntityDef,
    mut stored: Map<String, Value>,
    stored_at_ms: i64,
    stamps: &Stamps,
    incoming: &Map<String, Value>,
    fields: impl IntoIterator<Item = &'f str>,
    at_ms: i64,
) -> Option<Merged> {
    use std::cmp::Ordering::*;
    let mut all: Vec<(&'static str, i64)> =
        def.stamped_fields().map(|f| (f.name, stamps.get(f.name, stored_at_ms))).collect();
    let mut taken = false;
    for name in fields {
        let (Some(new), Some((_, stamp))) = (incoming.get(name), all.iter_mut().find(|(n, _)| *n == name)) else {
            continue;
        };
        *stamp = match (at_ms.cmp(stamp), stored.get(name)) {
            (Greater, _) => at_ms,
            (Equal, old) if old.unwrap_or(&Value::Null) != new => *stamp + 1,
            _ => continue,
        };
        stored.insert(name.to_owned(), new.clone());
        taken = true;
    }
    if !taken {
        return None;
    }
    let latest = all.iter().map(|(_, s)| *s).max().unwrap_or(at_ms);
    let updated_at_ms = latest.max(stored_at_ms + 1);
    Some(Merged { entity: stored, stamps: Stamps::compact(&all, updated_at_ms), updated_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntityType;
    use serde_json::json;

    fn tag(name: &str, color: &str) -> Map<String, Value> {
        json!({"id": "t", "name": name, "parentTagId": null, "color": color, "icon": null}).as_object().unwrap().clone()
    }

    #[test]
    fn different_fields_both_kept_and_the_version_always_advances() {
        let def = EntityType::Tag.def();
        let base = tag("a", "red");
        // a note-like edit at 20 on an entity written at 10
        let m = merge_fields(def, base.clone(), 10, &Stamps::default(), &tag("b", "x"), ["name"], 20).unwrap();
        assert_eq!((m.entity["name"].as_str(), m.entity["color"].as_str()), (Some("b"), Some("red")));
        assert_eq!(m.updated_at_ms, 20);
        assert_eq!(m.stamps.get("color", 20), 10);
        assert_eq!(m.stamps.get("name", 20), 20);
        // an older edit of the other field still takes it; the version moves past 20
        let m2 = merge_fields(def, m.entity.clone(), 20, &m.stamps, &tag("z", "blue"), ["color"], 15).unwrap();
        assert_eq!((m2.entity["name"].as_str(), m2.entity["color"].as_str()), (Some("b"), Some("blue")));
        assert_eq!(m2.updated_at_ms, 21);
        assert_eq!((m2.stamps.get("name", 21), m2.stamps.get("color", 21)), (20, 15));
        // an even older edit of `name` loses: nothing changes
        assert_eq!(merge_fields(def, m2.entity.clone(), 21, &m2.stamps, &tag("old", ""), ["name"], 19), None);
    }

    #[test]
    fn ties_go_to_the_later_arrival_unless_equal() {
        let def = EntityType::Tag.def();
        let base = tag("a", "red");
        assert_eq!(merge_fields(def, base.clone(), 10, &Stamps::default(), &tag("a", ""), ["name"], 10), None);
        let m = merge_fields(def, base.clone(), 10, &Stamps::default(), &tag("b", ""), ["name"], 10).unwrap();
        assert_eq!(m.updated_at_ms, 11);
        assert_eq!(m.stamps.get("name", 11), 11);
        assert_eq!(m.stamps.get("color", 11), 10);
        assert_eq!(Stamps::parse(m.stamps.to_json().as_deref()), m.stamps);
        assert_eq!(Stamps::parse(None).to_json(), None);
    }

    #[test]
    fn stamps_are_stored_compactly() {
        let def = EntityType::Transaction.def();
        let t = |note: &str| {
            json!({"id": "x", "accountId": "a", "date": "2026-01-01", "valueDate": "2026-01-01", "amount": 1,
                   "type": "EXPENSE", "runningBalance": 0, "note": note})
        };
        let base = def.normalize(&t("a"), 10).unwrap();
        let incoming = def.normalize_fields(&t("b"), &["note".to_owned()]).unwrap();
        let m = merge_fields(def, base, 10, &Stamps::default(), &incoming, ["note"], 20).unwrap();
        // twenty fields at 10, the note at 20: the base and the note, whatever the entity's size
        assert_eq!(m.stamps.to_json().as_deref(), Some(r#"{"*":10,"note":20}"#));
        assert_eq!((m.stamps.get("note", 20), m.stamps.get("amount", 20)), (20, 10));
        let incoming = def.normalize_fields(&t("c"), &["note".to_owned()]).unwrap();
        let m2 = merge_fields(def, m.entity.clone(), 20, &m.stamps, &incoming, ["note"], 15);
        assert_eq!(m2, None, "older than the note's own stamp");
        let amount = def.normalize_fields(&json!({"amount": 2}), &["amount".to_owned()]).unwrap();
        let m3 = merge_fields(def, m.entity, 20, &m.stamps, &amount, ["amount"], 15).unwrap();
        // the amount at 15 is older than the version: the version moves to 21, nothing carries it
        assert_eq!(m3.updated_at_ms, 21);
        assert_eq!(m3.stamps.to_json().as_deref(), Some(r#"{"*":10,"amount":15,"note":20}"#));
    }
}
