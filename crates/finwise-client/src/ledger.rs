//! What the books say, computed the way the FinWise 0.4 app computes it, so that every client
//! shows the same numbers (the web app's `src/balances.ts` and `src/budget.ts` follow the same
//! rules; docs/ARCHITECTURE.md's Decisions name the 0.4 sources).
//!
//! * An account's balance is the sum of its transactions' `amount` dated today or earlier,
//!   category transfers (`CATEGORYTRANSFER`, budget bookings without an account) excluded. The
//!   stored `balance` field is not used: 0.4 writes 0 at creation and never maintains it; `offset`
//!   is a chart baseline, not money. An opening balance is a `RECONCILE` transaction.
//! * A category's month: `budgeted` is the sum of its category transfers in the month, `spent`
//!   the sum of its expenses and income in the month (negative for spending), `available` the
//!   sum of all its transactions up to the end of the month (carry-over included). Months are by
//!   `valueDate`, falling back to `date`.

use std::collections::HashMap;

use serde_json::{Map, Value};

type Entity = Map<String, Value>;

fn text<'a>(e: &'a Entity, key: &str) -> &'a str {
    e.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn amount(e: &Entity) -> f64 {
    e.get("amount").and_then(Value::as_f64).unwrap_or(0.0)
}

/// Rounds to cents (sums of binary floats drift below a cent).
pub fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The date a transaction counts in for months: `valueDate`, else `date` (`YYYY-MM-DD`).
fn value_date(t: &Entity) -> &str {
    match text(t, "valueDate") {
        "" => text(t, "date"),
        d => d,
    }
}

/// Balances by account id as of `as_of` (`YYYY-MM-DD`, inclusive), by the 0.4 rule.
pub fn account_balances(transactions: &[Entity], as_of: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for t in transactions {
        let (account, date) = (text(t, "accountId"), text(t, "date"));
        if account.is_empty() || text(t, "type") == "CATEGORYTRANSFER" || date.get(..10).unwrap_or(date) > as_of {
            continue;
        }
        *out.entry(account.to_owned()).or_default() += amount(t);
    }
    out.values_mut().for_each(|v| *v = cents(*v));
    out
}

/// One category's figures for a month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CategoryMonth {
    pub budgeted: f64,
    pub spent: f64,
    pub available: f64,
}

/// Every category's figures for `month` (`YYYY-MM`), by category id.
pub fn category_month(transactions: &[Entity], month: &str) -> HashMap<String, CategoryMonth> {
    let end = format!("{month}-31"); // a string bound: every date of the month sorts before it
    let mut out: HashMap<String, CategoryMonth> = HashMap::new();
    for t in transactions {
        let category = text(t, "categoryId");
        if category.is_empty() {
            continue;
        }
        let date = value_date(t);
        let m = out.entry(category.to_owned()).or_default();
        let a = amount(t);
        if date.get(..10).unwrap_or(date) <= end.as_str() {
            m.available += a;
        }
        if date.starts_with(month) {
            match text(t, "type") {
                "CATEGORYTRANSFER" => m.budgeted += a,
                "EXPENSE" | "INCOME" => m.spent += a,
                _ => {}
            }
        }
    }
    for m in out.values_mut() {
        *m = CategoryMonth { budgeted: cents(m.budgeted), spent: cents(m.spent), available: cents(m.available) };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tx(account: &str, category: &str, kind: &str, amount: f64, date: &str) -> Entity {
        json!({"accountId": account, "categoryId": category, "type": kind, "amount": amount, "date": date, "valueDate": date})
            .as_object()
            .unwrap()
            .clone()
    }

    /// The vectors the web app checks too (`web/tests/ledgerVectors.test.ts`): both clients show
    /// the same numbers.
    #[test]
    fn shared_vectors() {
        let v: Value = serde_json::from_str(include_str!("../../../testdata/ledger-vectors.json")).unwrap();
        for case in v["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let list: Vec<Entity> =
                case["transactions"].as_array().unwrap().iter().map(|t| t.as_object().unwrap().clone()).collect();
            let balances = account_balances(&list, case["as_of"].as_str().unwrap());
            let want: HashMap<String, f64> =
                case["balances"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect();
            assert_eq!(balances, want, "{name}");
            let months = category_month(&list, case["month"].as_str().unwrap());
            for (category, want) in case["categories"].as_object().unwrap() {
                let f = |k: &str| want[k].as_f64().unwrap();
                let want = CategoryMonth { budgeted: f("budgeted"), spent: f("spent"), available: f("available") };
                assert_eq!(months[category], want, "{name}: {category}");
            }
        }
    }

    #[test]
    fn balances_follow_the_04_rule() {
        let list = [
            tx("giro", "", "RECONCILE", 1000.0, "2026-01-01"), // opening balance
            tx("giro", "food", "EXPENSE", -12.34, "2026-03-02"),
            tx("giro", "", "ACCOUNTTRANSFER", -200.0, "2026-03-03"),
            tx("save", "", "ACCOUNTTRANSFER", 200.0, "2026-03-03"),
            tx("giro", "rent", "EXPENSE", -800.0, "2026-04-01"), // future: not yet in the balance
            tx("", "food", "CATEGORYTRANSFER", 300.0, "2026-03-01"), // a budget booking: no account
            tx("giro", "food", "CATEGORYTRANSFER", 5.0, "2026-03-01"), // never money of an account
        ];
        let b = account_balances(&list, "2026-03-31");
        assert_eq!(b["giro"], 787.66);
        assert_eq!(b["save"], 200.0);
        assert_eq!(b.len(), 2);
        assert_eq!(account_balances(&list, "2026-04-01")["giro"], -12.34);
    }

    #[test]
    fn a_category_month_has_budget_spending_and_carry_over() {
        let list = [
            tx("", "food", "CATEGORYTRANSFER", 300.0, "2026-02-28"),
            tx("giro", "food", "EXPENSE", -250.0, "2026-02-10"),
            tx("", "food", "CATEGORYTRANSFER", 300.0, "2026-03-31"),
            tx("giro", "food", "EXPENSE", -12.5, "2026-03-02"),
            tx("giro", "food", "INCOME", 2.5, "2026-03-05"), // a refund
            tx("giro", "food", "EXPENSE", -99.0, "2026-04-01"),
        ];
        let m = category_month(&list, "2026-03")["food"];
        assert_eq!(m, CategoryMonth { budgeted: 300.0, spent: -10.0, available: 340.0 });
        let feb = category_month(&list, "2026-02")["food"];
        assert_eq!(feb, CategoryMonth { budgeted: 300.0, spent: -250.0, available: 50.0 });
    }
}
