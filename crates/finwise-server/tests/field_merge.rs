//! Field-level merge over real sockets: the shared vectors (`testdata/field-merge-vectors.json`,
//! also run by the web client's tests), two devices editing different fields of one entity, the
//! echo to the writer, validation and idempotent retries of field-level entries.

use finwise_protocol::EntityType;
use finwise_testkit::{entry, new_id, ts, TestServer, Ws};
use serde_json::{json, Value};

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/field-merge-vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("the vectors are JSON")
}

/// Equal as the server stores them: numbers by value (`12` and `12.0`), the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn sync_entry(tenant: &str, entity_type: &str, w: &Value) -> Value {
    let mut e = entry(tenant, entity_type, w["op"].as_str().unwrap(), w["payload"].clone());
    if let Some(fields) = w.get("fields") {
        e["fields"] = fields.clone();
    }
    e
}

/// The live entity `id` of a full load, if any.
fn loaded(load: &Value, t: EntityType, id: &str) -> Option<Value> {
    load["payload"][t.collection()].as_array().unwrap().iter().find(|e| e["id"] == id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_vectors_decide_on_the_server_as_written() {
    let s = TestServer::start(|_| {}).await;
    let (_, token, _) = s.user("vectors").await;
    let cases = vectors()["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 10, "the vectors cover the rule");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let t = EntityType::parse(case["entityType"].as_str().unwrap()).unwrap();
        let tenant = s.tenant(&token, name).await;
        let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
        let writes = case["writes"].as_array().unwrap();
        let id = writes[0]["payload"]["id"].as_str().unwrap().to_owned();
        for (i, w) in writes.iter().enumerate() {
            let ack = ws.entry(&sync_entry(&tenant, t.as_str(), w)).await;
            assert_eq!(ack["type"], "sync_ack", "{name}: write {i}: {ack}");
            assert_eq!(ack["applied"], case["expect"]["applied"][i], "{name}: write {i} applied: {ack}");
        }
        let load = Ws::connect(&s.ws_url(&tenant, Some(&token))).await.load(&tenant).await;
        let got = loaded(&load, t, &id);
        let expect = &case["expect"];
        if expect["deleted"] == true {
            assert_eq!(got, None, "{name}: deleted");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{name}: the entity is live"));
        assert_eq!(got["updated_at"], expect["updated_at"], "{name}: updated_at");
        let want = expect["entity"].as_object().unwrap();
        assert_eq!(got.as_object().unwrap().len(), want.len(), "{name}: fields of {got}");
        for (k, v) in want {
            assert!(same(&got[k], v), "{name}: {k} is {} (expected {v})", got[k]);
        }
    }
}

fn transaction(id: &str, at: &str) -> Value {
    json!({"id": id, "accountId": "acc", "categoryId": "food", "date": "2026-11-30", "valueDate": "2026-11-30",
           "amount": -12.5, "description": "Bakery", "note": null, "type": "EXPENSE", "runningBalance": 0,
           "updated_at": at})
}

/// The next `data_update` of `id` on `ws`.
async fn update_of(ws: &mut Ws, id: &str) -> Value {
    ws.recv_until(|v| v["event_type"] == "data_update" && v["data"]["single_entity"]["id"] == id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_different_fields_and_everyone_ends_with_both() {
    let s = TestServer::start(|_| {}).await;
    let (_, token, _) = s.user("couple").await;
    let tenant = s.tenant(&token, "Home").await;
    let url = s.ws_url(&tenant, Some(&token));
    let (mut phone, mut laptop, mut tablet) =
        (Ws::connect(&url).await, Ws::connect(&url).await, Ws::connect(&url).await);
    let id = new_id();
    let created = phone.entry(&entry(&tenant, "Transaction", "create", transaction(&id, &ts(-60_000)))).await;
    assert_eq!(created["applied"], true);
    // both edited offline; the laptop's edit is the later one but arrives first
    let (note_at, category_at) = (ts(-20_000), ts(-10_000));
    let mut recategorise =
        entry(&tenant, "Transaction", "update", json!({"id": id, "updated_at": category_at, "categoryId": "rent"}));
    recategorise["fields"] = json!(["categoryId"]);
    let mut annotate =
        entry(&tenant, "Transaction", "update", json!({"id": id, "updated_at": note_at, "note": "birthday cake"}));
    annotate["fields"] = json!(["note"]);
    assert_eq!(laptop.entry(&recategorise).await["applied"], true);
    let ack = phone.entry(&annotate).await;
    assert_eq!(ack["applied"], true, "an older edit of another field is still taken: {ack}");
    // the writer gets the merge too, and so does everyone else
    for ws in [&mut phone, &mut tablet] {
        let mut v = update_of(ws, &id).await;
        while v["data"]["single_entity"]["note"].is_null() {
            v = update_of(ws, &id).await;
        }
        let e = &v["data"]["single_entity"];
        assert_eq!((e["note"].as_str(), e["categoryId"].as_str()), (Some("birthday cake"), Some("rent")), "{v}");
        assert_eq!(v["seq"], ack["seq"]);
        assert_eq!(e["updated_at"], ack["updated_at"]);
        assert!(e["updated_at"].as_str().unwrap() > category_at.as_str(), "the version moved past every stamp");
    }
    // the retry of a field-level entry is a duplicate with the original answer
    let again = phone.entry(&annotate).await;
    assert_eq!((again["duplicate"].clone(), again["seq"].clone()), (json!(true), ack["seq"].clone()));
    // a whole update from a 0.4 client older than the note edit keeps the note, takes the rest
    let mut legacy = transaction(&id, &ts(-25_000));
    legacy["description"] = json!("Bakery Müller");
    let old = laptop.entry(&entry(&tenant, "Transaction", "update", legacy)).await;
    assert_eq!(old["applied"], true, "{old}");
    let load = tablet.load(&tenant).await;
    let e = loaded(&load, EntityType::Transaction, &id).unwrap();
    assert_eq!(
        (e["note"].as_str(), e["categoryId"].as_str(), e["description"].as_str()),
        (Some("birthday cake"), Some("rent"), Some("Bakery Müller")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_level_entries_are_validated_and_never_revive_a_tombstone() {
    let s = TestServer::start(|_| {}).await;
    let (_, token, _) = s.user("strict").await;
    let tenant = s.tenant(&token, "Strict").await;
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let id = new_id();
    ws.entry(&entry(&tenant, "Transaction", "create", transaction(&id, &ts(-60_000)))).await;
    let field_update = |fields: Value, payload: Value| {
        let mut e = entry(&tenant, "Transaction", "update", payload);
        e["fields"] = fields;
        e
    };
    let refused = [
        (json!(["mood"]), json!({"id": id, "updated_at": ts(-1000), "mood": 1}), "fields: 'mood'"),
        (json!(["updated_at"]), json!({"id": id, "updated_at": ts(-1000)}), "fields: 'updated_at'"),
        (json!(["note"]), json!({"id": id, "updated_at": ts(-1000)}), "payload.note: listed in fields"),
        (json!(["amount"]), json!({"id": id, "updated_at": ts(-1000), "amount": "lots"}), "payload.amount"),
        (json!(["accountId"]), json!({"id": id, "updated_at": ts(-1000), "accountId": null}), "payload.accountId"),
        (json!([]), json!({"id": id, "updated_at": ts(-1000)}), "fields: must name"),
    ];
    for (fields, payload, detail) in refused {
        let nack = ws.entry(&field_update(fields, payload)).await;
        assert_eq!((nack["type"].as_str(), nack["reason"].as_str()), (Some("sync_nack"), Some("validation_error")));
        assert!(nack["detail"].as_str().unwrap().contains(detail), "{nack} should say {detail}");
    }
    let mut create_with_fields = entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "x"}));
    create_with_fields["fields"] = json!(["name"]);
    assert_eq!(ws.entry(&create_with_fields).await["reason"], "validation_error");

    // deleted: a field-level update is not applied, and the writer is told the entity is gone
    let del = ws.entry(&entry(&tenant, "Transaction", "delete", json!({"id": id, "updated_at": ts(-5000)}))).await;
    assert_eq!(del["applied"], true);
    let late = ws.entry(&field_update(json!(["note"]), json!({"id": id, "updated_at": ts(-1000), "note": "x"}))).await;
    assert_eq!((late["applied"].clone(), late["seq"].clone()), (json!(false), del["seq"].clone()), "{late}");
    let gone = update_of(&mut ws, &id).await;
    assert_eq!(gone["operation_type"], "delete");
    let load = ws.load(&tenant).await;
    assert_eq!(loaded(&load, EntityType::Transaction, &id), None);
    // never stored at all: not applied either, and nothing is created
    let ghost = new_id();
    let never =
        ws.entry(&field_update(json!(["note"]), json!({"id": ghost, "updated_at": ts(-1000), "note": "x"}))).await;
    assert_eq!(never["applied"], false, "{never}");
    assert_eq!(loaded(&ws.load(&tenant).await, EntityType::Transaction, &ghost), None);
}
