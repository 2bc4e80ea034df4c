//! Consistency values: the v2 tenant digest and the 0.4 per-row checksum.

use md5::Md5;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{entity::EntityType, time};

/// The v2 tenant digest: lowercase hex SHA-256 over the lines
/// `"{entityType}\t{id}\t{updated_at}\n"` of every live entity, sorted bytewise.
/// `updated_at` must be in the wire form `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn tenant_digest<'a>(live: impl IntoIterator<Item = (EntityType, &'a str, &'a str)>) -> String {
    let mut lines: Vec<String> =
        live.into_iter().map(|(t, id, updated_at)| format!("{}\t{}\t{}\n", t.as_str(), id, updated_at)).collect();
    lines.sort_unstable();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The keys that enter the 0.4 checksum of a row, per type; `None` for types 0.4 never checksummed.
pub fn checksum_keys(t: EntityType) -> Option<&'static [&'static str]> {
    Some(match t {
        EntityType::Account => &[
            "id",
            "name",
            "description",
            "note",
            "accountType",
            "isActive",
            "isOfflineBudget",
            "accountGroupId",
            "sortOrder",
            "iban",
            "balance",
            "creditLimit",
            "offset",
            "logo_path",
            "updated_at",
        ],
        EntityType::AccountGroup => &["id", "name", "sortOrder", "logo_path", "updated_at"],
        EntityType::Category => &[
            "id",
            "name",
            "icon",
            "budgeted",
            "activity",
            "available",
            "isIncomeCategory",
            "isHidden",
            "isActive",
            "sortOrder",
            "categoryGroupId",
            "parentCategoryId",
            "isSavingsGoal",
            "updated_at",
        ],
        EntityType::CategoryGroup => &["id", "name", "sortOrder", "isIncomeGroup", "updated_at"],
        EntityType::Recipient => &["id", "name", "defaultCategoryId", "note", "updated_at"],
        EntityType::Tag => &["id", "name", "parentTagId", "color", "icon", "updated_at"],
        _ => return None,
    })
}

/// The 0.4 checksum of one stored entity (0.4 description §10): MD5 of Python's
/// `json.dumps(row, sort_keys=True)` with 0.4's value rules.
pub fn legacy_checksum(t: EntityType, entity: &Map<String, Value>) -> Option<String> {
    let keys = checksum_keys(t)?;
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    let mut s = String::from("{");
    for (i, k) in sorted.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        python_str(&mut s, k);
        s.push_str(": ");
        let v = entity.get(*k).unwrap_or(&Value::Null);
        match *k {
            "balance" | "budgeted" | "activity" | "available" => {
                s.push_str(&python_float(v.as_f64().unwrap_or(0.0)));
            }
            "creditLimit" => match v.as_f64().filter(|x| *x != 0.0) {
                Some(x) => s.push_str(&python_float(x)),
                None => s.push_str("null"),
            },
            "updated_at" => match v.as_str().and_then(time::parse_ms) {
                Some(ms) => python_str(&mut s, &time::format_python_naive(ms)),
                None => s.push_str("null"),
            },
            _ => python_value(&mut s, v),
        }
    }
    s.push('}');
    Some(hex::encode(Md5::digest(s.as_bytes())))
}

fn python_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => out.push_str(&python_float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => python_str(out, s),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON value as Python's `json.dumps` writes it by default (`", "` and `": "` separators,
/// `ensure_ascii`, keys in their order): how 0.4 stored JSON columns.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    python_json_into(&mut out, v);
    out
}

fn python_json_into(out: &mut String, v: &Value) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_into(out, item);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_str(out, k);
                out.push_str(": ");
                python_json_into(out, item);
            }
            out.push('}');
        }
        other => python_value(out, other),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, `e+XX` exponents.
pub fn python_float(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        return format!("{x:?}");
    }
    let s = format!("{x:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// A JSON string as Python's `json.dumps` writes it with `ensure_ascii=True`.
fn python_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_checksum_matches_the_worked_example() {
        let e = json!({"id": "5aea3e0b-2565-449a-946e-29e3860f72db", "logo_path": null, "name": "G",
            "sortOrder": 0, "updated_at": "2026-01-02T03:04:05.678Z"});
        let sum = legacy_checksum(EntityType::AccountGroup, e.as_object().unwrap()).unwrap();
        assert_eq!(sum, "11feba394c772f20aa43260c74c0da0c");
    }

    #[test]
    fn python_json_forms() {
        let v = serde_json::json!([{"field": "amount", "value": -1.5, "ok": true}, "Müller", 3, null]);
        assert_eq!(python_json(&v), r#"[{"field": "amount", "value": -1.5, "ok": true}, "M\u00fcller", 3, null]"#);
    }

    #[test]
    fn python_float_forms() {
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(-10.5), "-10.5");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
    }

    #[test]
    fn digest_is_order_independent() {
        let a = tenant_digest([
            (EntityType::Tag, "b", "2026-01-01T00:00:00.000Z"),
            (EntityType::Account, "a", "2026-01-01T00:00:00.000Z"),
        ]);
        let b = tenant_digest([
            (EntityType::Account, "a", "2026-01-01T00:00:00.000Z"),
            (EntityType::Tag, "b", "2026-01-01T00:00:00.000Z"),
        ]);
        assert_eq!(a, b);
        assert_eq!(tenant_digest([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
