//! Drives the `finwise` binary: `serve` on port 0, and two "terminals" (two FINWISE_HOMEs)
//! logged in as the same user.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use finwise_testkit::process::ServerProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_finwise");
const PASSWORD: &str = "correct horse battery";

/// The server under test: the kit's process of the real binary, on a fresh data dir.
struct Server {
    url: String,
    _process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let process = ServerProcess::start(dir.path(), &[]);
        Server { url: process.url(), _process: process, _dir: dir }
    }
}

fn cmd(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("FINWISE_HOME", home)
        .env("FINWISE_PASSWORD", PASSWORD)
        .env_remove("RUST_BACKTRACE")
        .env_remove("FINWISE_LOG");
    c
}

fn finwise(home: &Path, args: &[&str]) -> Output {
    cmd(home).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = finwise(home, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "finwise {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(home: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let s = ok(home, &a);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {s}"))
}

/// Runs a command that must fail; returns its stderr.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = finwise(home, args);
    assert!(!out.status.success(), "finwise {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_terminals_log_in_edit_sync_and_watch() {
    let server = Server::start();
    let (t1, t2, t3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (h1, h2) = (t1.path(), t2.path());

    // Clear errors with the next step.
    let e = fails(t3.path(), &["accounts", "ls"]);
    assert!(e.contains("not logged in") && e.contains("finwise login"), "{e}");
    assert!(!e.contains("backtrace"), "{e}");

    let out = ok(h1, &["login", "--server", &server.url, "--email", "ann@example.org", "--register", "--name", "Ann"]);
    assert!(out.contains("logged in"), "{out}");
    let e = fails(h1, &["accounts", "ls"]);
    assert!(e.contains("finwise tenant create"), "{e}");
    let t = json(h1, &["tenant", "create", "Household"]);
    let tenant = t["uuid"].as_str().unwrap().to_owned();

    // The second terminal logs in and picks the only tenant by itself.
    let v = json(h2, &["login", "--server", &server.url, "--email", "ann@example.org"]);
    assert_eq!(v["tenant"], tenant.as_str());
    let list = json(h2, &["tenant", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    ok(h2, &["tenant", "use", "household"]);

    // Terminal 1 works offline-first: local writes, then one sync.
    let e = fails(h1, &["accounts", "add", "name=Giro"]);
    assert!(e.contains("groups add"), "{e}");
    ok(h1, &["groups", "add", "name=Banks"]);
    let acc = json(h1, &["accounts", "add", "name=Giro", "group=Banks", "balance=1200.5"]);
    assert_eq!(acc["balance"], 1200.5);
    ok(h1, &["categories", "add", "name=Food"]);
    ok(h1, &["transactions", "add", "amount=-12.5", "description=Coffee", "category=Food"]);
    let st = json(h1, &["status"]);
    assert_eq!(st["status"]["queue"]["pending"], 4);
    let r = json(h1, &["sync"]);
    assert_eq!((r["acked"].as_u64(), r["converged"].as_bool()), (Some(4), Some(true)), "{r}");

    // Terminal 2 receives everything.
    let r = json(h2, &["sync"]);
    assert_eq!(r["received"], 4, "{r}");
    let accounts = json(h2, &["accounts", "ls"]);
    assert_eq!(accounts[0]["name"], "Giro");
    let table = ok(h2, &["transactions", "ls"]);
    assert!(
        table.contains("Coffee") && table.contains("Giro") && table.contains("Food") && table.contains("-12.50"),
        "{table}"
    );

    // Terminal 2 watches; terminal 1 adds an account and syncs; the watcher prints it.
    let mut watcher =
        cmd(h2).args(["sync", "--watch", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("watcher never printed {what}"));
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if pred(&v) {
                    return v;
                }
            }
        }
    };
    wait_for(&|v| v["event"] == "connection" && v["state"] == "online", "online");
    let st = json(h2, &["status"]);
    assert_eq!(st["status"]["watcher"]["state"], "online", "{st}");
    assert!(ok(h2, &["status"]).contains("online via `finwise sync --watch`"));
    ok(h1, &["accounts", "add", "name=Savings", "group=Banks"]);
    ok(h1, &["sync"]);
    let v = wait_for(&|v| v["event"] == "change" && v["entity"]["name"] == "Savings", "the new account");
    assert_eq!((v["origin"].as_str(), v["operation"].as_str()), (Some("remote"), Some("create")));

    // A change queued by another process on the watched home is pushed by the watcher.
    ok(h2, &["accounts", "edit", "Giro", "balance=99"]);
    wait_for(&|v| v["event"] == "sent" && v["count"] == 1, "that it sent the edit");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        ok(h1, &["sync"]);
        let acc = json(h1, &["accounts", "show", "Giro"]);
        if acc["balance"] == 99.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher did not push the edit");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(json(h2, &["status"])["status"]["watcher"].is_null(), "a killed watcher is not reported");

    // Delete, sync both; the stores agree.
    ok(h1, &["transactions", "rm", "Coffee"]);
    ok(h1, &["sync"]);
    ok(h2, &["sync"]);
    assert_eq!(json(h2, &["transactions", "ls"]).as_array().unwrap().len(), 0);
    let (s1, s2) = (json(h1, &["status"]), json(h2, &["status"]));
    assert_eq!(s1["status"]["local_digest"], s2["status"]["local_digest"]);
    assert_eq!(s1["status"]["converged"], true);
    assert_eq!(s2["status"]["server_digest"], s2["status"]["local_digest"]);
    let human = ok(h1, &["status"]);
    assert!(human.contains("queue") && human.contains("0 pending") && human.contains("reachable"), "{human}");
}

#[test]
fn offline_changes_stay_queued_and_errors_name_the_next_step() {
    let server = Server::start();
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    ok(h, &["login", "--server", &server.url, "--email", "bo@example.org", "--register"]);
    ok(h, &["tenant", "create", "Home"]);
    ok(h, &["tags", "add", "name=Holiday"]);
    drop(server);
    let e = fails(h, &["sync"]);
    assert!(e.contains("cannot reach the server") && e.contains("finwise sync"), "{e}");
    let st = json(h, &["status"]);
    assert_eq!(st["status"]["queue"]["pending"], 1);
    assert_eq!(st["server_reachable"], false);
    let e = fails(h, &["login", "--server", "http://127.0.0.1:1", "--email", "bo@example.org"]);
    assert!(e.contains("cannot reach"), "{e}");
    assert!(!e.contains("queued"), "a login has no queued changes to speak of: {e}");
    // with --json, a failure is a JSON object on stdout
    let out = finwise(h, &["--json", "login", "--server", "http://127.0.0.1:1", "--email", "bo@example.org"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    assert!(v["error"].as_str().unwrap().contains("cannot reach"), "{v}");
    let e2 = fails(h, &["tags", "add", "name=[1,2]"]);
    assert_eq!(e2.matches("expected a string").count(), 1, "said once: {e2}");
    let help = ok(h, &["accounts", "add", "--help"]);
    assert!(help.contains("accountType") && help.contains("one of giro") && help.contains("balance"), "{help}");
    let e = fails(h, &["tags", "add", "nmae=typo"]);
    assert!(e.contains("no field 'nmae'") && e.contains("name, parentTagId"), "{e}");
    let e = fails(h, &["tags", "rm", "nothing-like-this"]);
    assert!(e.contains("finwise tags ls"), "{e}");
}

#[test]
fn a_household_is_shared_renamed_left_and_deleted() {
    let server = Server::start();
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ann, bob) = (ta.path(), tb.path());
    ok(ann, &["login", "--server", &server.url, "--email", "ann@example.org", "--register", "--name", "Ann"]);
    ok(bob, &["login", "--server", &server.url, "--email", "bob@example.org", "--register", "--name", "Bob"]);
    let t = json(ann, &["tenant", "create", "Home"]);
    let tenant = t["uuid"].as_str().unwrap().to_owned();

    // Inviting someone who has not registered says what they must do.
    let e = fails(ann, &["member", "add", "carol@example.org"]);
    assert!(e.contains("no user with this e-mail") && e.contains("register"), "{e}");
    let out = ok(ann, &["member", "add", "bob@example.org"]);
    assert!(out.contains("bob@example.org is now a member of Home"), "{out}");
    let members = json(ann, &["member", "list"]);
    let roles: Vec<(&str, &str)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("ann@example.org", "owner"), ("bob@example.org", "member")]);
    let table = ok(ann, &["member", "ls"]);
    assert!(table.lines().any(|l| l.contains("Ann") && l.contains("owner") && l.contains("(you)")), "{table}");

    // Bob sees the household, works in it, and Ann gets his change.
    ok(bob, &["tenant", "use", "Home"]);
    ok(bob, &["tags", "add", "name=Urlaub"]);
    ok(bob, &["sync"]);
    ok(ann, &["sync"]);
    assert!(ok(ann, &["tags", "ls"]).contains("Urlaub"));

    // A member may not remove others, nor rename or delete; the messages say who can.
    let e = fails(bob, &["member", "rm", "ann@example.org"]);
    assert!(e.contains("only an owner of Home"), "{e}");
    let e = fails(bob, &["tenant", "rename", "Ours"]);
    assert!(e.contains("only an owner of Home"), "{e}");
    let e = fails(bob, &["tenant", "rm", "--yes"]);
    assert!(e.contains("only an owner of Home"), "{e}");

    // The last owner cannot leave; after making Bob an owner, Ann can.
    let e = fails(ann, &["member", "leave"]);
    assert!(e.contains("at least one owner"), "{e}");
    ok(ann, &["member", "add", "bob@example.org", "--owner"]);
    let out = ok(bob, &["tenant", "rename", "Ours"]);
    assert!(out.contains("renamed Home to Ours"), "{out}");
    let out = ok(ann, &["member", "leave"]);
    assert!(out.contains("you left") && out.contains("local copy on this machine was removed"), "{out}");
    assert!(!ann.join("data").join(t["user_id"].as_str().unwrap_or("-")).join(format!("{tenant}.db")).exists());
    assert_eq!(json(ann, &["tenant", "list"]).as_array().unwrap().len(), 0);
    let e = fails(ann, &["tags", "ls"]);
    assert!(e.contains("no tenant selected"), "{e}");

    // Bob invites Ann back and removes her; her sync then says she is no member.
    ok(bob, &["member", "add", "ann@example.org"]);
    ok(ann, &["tenant", "use", "Ours"]);
    ok(ann, &["sync"]);
    let out = ok(bob, &["member", "rm", "Ann"]);
    assert!(out.contains("removed Ann (ann@example.org) from Ours"), "{out}");
    let e = fails(ann, &["sync"]);
    assert!(e.contains("not a member"), "{e}");

    // Deleting asks for confirmation when not told --yes, then removes it for everyone.
    let e = fails(bob, &["tenant", "rm"]);
    assert!(e.contains("pass --yes"), "{e}");
    let out = ok(bob, &["tenant", "rm", "Ours", "--yes"]);
    assert!(out.contains("deleted Ours") && out.contains("for every member"), "{out}");
    assert_eq!(json(bob, &["tenant", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn enums_read_as_words_and_plans_and_rules_have_commands() {
    let server = Server::start();
    let th = tempfile::tempdir().unwrap();
    let h = th.path();
    ok(h, &["login", "--server", &server.url, "--email", "eve@example.org", "--register"]);
    ok(h, &["tenant", "create", "Home"]);
    let help = ok(h, &["accounts", "add", "--help"]);
    assert!(help.contains("giro (checking)") && help.contains("kreditkarte (credit card)"), "{help}");
    ok(h, &["groups", "add", "name=Banks"]);
    let out = ok(h, &["accounts", "add", "name=Giro", "type=giro", "opening=1000"]);
    assert!(out.contains("with an opening balance of 1000.00"), "{out}");
    ok(h, &["transactions", "add", "amount=-12.5", "description=Coffee"]);
    ok(h, &["transactions", "add", "amount=-80", "description=Later", "date=2999-01-01"]); // future: not yet
    let table = ok(h, &["accounts", "ls"]);
    assert!(table.contains("checking (giro)"), "{table}");
    // the balance FinWise 0.4 shows: the opening reconciliation plus the transactions up to today
    assert!(table.lines().any(|l| l.contains("Giro") && l.contains("987.50")), "{table}");
    let e = fails(h, &["accounts", "add", "name=Cash", "opening=lots"]);
    assert!(e.contains("opening balance is an amount"), "{e}");
    // the wire keeps the 0.4 value
    assert_eq!(json(h, &["accounts", "show", "Giro"])["accountType"], "giro");

    let plan = json(h, &["planning", "add", "name=Rent", "amount=-850", "recurrencePattern=MONTHLY"]);
    assert_eq!((plan["recurrencePattern"].as_str(), plan["isActive"].as_bool()), (Some("MONTHLY"), Some(true)));
    let table = ok(h, &["plans", "ls"]);
    assert!(table.contains("Rent") && table.contains("monthly (MONTHLY)") && table.contains("Giro"), "{table}");
    let rule = json(
        h,
        &[
            "rules",
            "add",
            "name=Groceries",
            r#"conditions=[{"type":"description","operator":"contains","value":"REWE"}]"#,
        ],
    );
    assert_eq!(rule["stage"], "DEFAULT");
    let r = json(h, &["sync"]);
    assert_eq!(r["converged"], true, "{r}");
}
