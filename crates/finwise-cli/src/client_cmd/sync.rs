//! `finwise sync` (once, `--watch`, `--full`, `--retry-failed`) and `finwise status`.

use finwise_protocol::locks::LockExt;
use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
};

use anyhow::Result;
use finwise_client::{Change, ClientOptions, ConnectionState, EntryStatus, Operation, Origin, Progress, SyncReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use super::{
    entities::{label, noun, print_table},
    explain_queued, Ctx, SyncArgs,
};

/// A progress bar on stderr (drawn only on a terminal) fed by the client's progress events.
fn progress_options(enabled: bool) -> ClientOptions {
    let mut opts = ClientOptions::default();
    if !enabled {
        return opts;
    }
    let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::new(Mutex::new(None));
    opts.progress = Some(Arc::new(move |p: &Progress| {
        let mut slot = bar.locked();
        match p {
            Progress::Pushing { sent, total } => {
                let b = slot.get_or_insert_with(|| new_bar(Some(*total), "sending"));
                b.set_length((*total).max(*sent));
                b.set_position(*sent);
                if sent >= total {
                    b.finish_and_clear();
                    *slot = None;
                }
            }
            Progress::Loading { received, total } => {
                let b = slot.get_or_insert_with(|| new_bar(*total, "loading"));
                b.set_position(*received);
            }
            Progress::Loaded { .. } => {
                if let Some(b) = slot.take() {
                    b.finish_and_clear();
                }
            }
        }
    }));
    opts
}

fn new_bar(total: Option<u64>, what: &'static str) -> ProgressBar {
    match total {
        Some(n) => {
            let b = ProgressBar::new(n);
            if let Ok(s) = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} ({eta})") {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_message(what);
            b
        }
        None => {
            let b = ProgressBar::new_spinner();
            b.set_message(format!("{what}…"));
            b
        }
    }
}

fn describe(r: &SyncReport) -> String {
    let mut parts = vec![format!("sent {}", r.acked)];
    if r.duplicates > 0 {
        parts.push(format!("{} already on the server", r.duplicates));
    }
    if r.lost > 0 {
        parts.push(format!("{} overruled by newer versions", r.lost));
    }
    if r.loaded > 0 {
        parts.push(format!("loaded {} ({} new or changed here)", r.loaded, r.received));
    } else {
        parts.push(format!("received {}", r.received));
    }
    if r.retried > 0 {
        parts.push(format!("{} to retry", r.retried));
    }
    if r.failed > 0 {
        parts.push(format!("{} refused (see `finwise status`)", r.failed));
    }
    let state = match r.converged {
        Some(true) => "in sync with the server".to_owned(),
        Some(false) => "NOT in sync with the server after a full resync".to_owned(),
        None => "changes still queued".to_owned(),
    };
    format!("{}; cursor {}; {state}", parts.join(", "), r.cursor.map(|c| c.to_string()).unwrap_or_else(|| "-".into()))
}

fn change_line(c: &Change) -> String {
    let (one, _) = noun(c.entity_type);
    let arrow = if c.origin == Origin::Remote { "←" } else { "→" };
    let what = match c.operation {
        Operation::Create => "added",
        Operation::Update => "changed",
        Operation::Delete => "deleted",
    };
    let name = c.entity.as_ref().map(label).unwrap_or_default();
    let id: String = c.id.chars().take(8).collect();
    format!("{arrow} {one} {name} ({id}) {what}").replace("  ", " ")
}

pub(super) async fn sync(ctx: &Ctx, a: SyncArgs) -> Result<()> {
    let mut opts = progress_options(!a.watch && !ctx.json && std::io::stderr().is_terminal());
    if a.watch {
        // In watch mode, say when queued changes went out (they may come from other shells).
        let json_out = ctx.json;
        opts.progress = Some(Arc::new(move |p: &Progress| {
            if let Progress::Pushing { sent, total } = p {
                if sent >= total {
                    if json_out {
                        println!("{}", json!({"event": "sent", "count": sent}));
                    } else {
                        println!("→ sent {sent} queued change{}", if *sent == 1 { "" } else { "s" });
                    }
                }
            }
        }));
    }
    let client = ctx.client_with(opts)?;
    let server = client.auth().server();
    let explain = |e| {
        let queued = client.status().is_ok_and(|s| s.queue.pending + s.queue.processing > 0);
        explain_queued(e, &server, queued)
    };
    if a.retry_failed {
        let n = client.retry_failed()?;
        if !ctx.json {
            println!("{n} failed entr{} queued again", if n == 1 { "y" } else { "ies" });
        }
    }
    let pulled = match a.full {
        true => Some(client.pull_only(true).await.map_err(explain)?),
        false => None,
    };
    if !a.watch {
        let mut r = client.sync_once().await.map_err(explain)?;
        // the full load went before: its figures are part of what this sync did
        if let Some(p) = pulled {
            r.full_load = true;
            r.loaded += p.loaded;
            r.received += p.received;
        }
        if ctx.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", describe(&r));
        }
        return Ok(());
    }
    // Watch: print changes and connection state until Ctrl-C.
    let json_out = ctx.json;
    let mut changes = client.changes();
    let mut conn = client.connection();
    let printer = tokio::spawn(async move {
        let mut shown: Option<ConnectionState> = None;
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => {
                        if json_out {
                            println!("{}", json!({"event": "change", "entity_type": c.entity_type, "id": c.id, "operation": c.operation, "origin": c.origin, "entity": c.entity}));
                        } else {
                            println!("{}", change_line(&c));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("({n} changes not shown)"),
                    Err(_) => break,
                },
                r = conn.changed() => {
                    if r.is_err() { break; }
                    let s = *conn.borrow_and_update();
                    if s == ConnectionState::Connecting || shown == Some(s) {
                        continue;
                    }
                    shown = Some(s);
                    if json_out {
                        println!("{}", json!({"event": "connection", "state": s}));
                    } else {
                        match s {
                            ConnectionState::Online => println!("● online"),
                            ConnectionState::Connecting => {}
                            ConnectionState::Offline => println!("○ offline (changes are queued; reconnecting…)"),
                        }
                    }
                }
            }
            let _ = std::io::stdout().flush();
        }
    });
    if !ctx.json {
        println!("watching {} on {} (Ctrl-C to stop)", client.auth().session().tenant_name.unwrap_or_default(), server);
    }
    let res = client
        .watch(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    printer.abort();
    res.map_err(explain)
}

fn state_word(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Online => "online",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Offline => "offline, reconnecting",
    }
}

pub(super) async fn status(ctx: &Ctx) -> Result<()> {
    let client = ctx.client()?;
    let auth = client.auth();
    let session = auth.session();
    let st = client.status()?;
    let reachable = auth.server_reachable().await;
    let failed = client.queue_entries(EntryStatus::Failed)?;
    let counts = client.counts()?;
    if ctx.json {
        let v = json!({
            "server": session.server,
            "server_reachable": reachable,
            "user": session.email,
            "tenant": session.tenant,
            "tenant_name": session.tenant_name,
            "status": st,
            "failed_entries": failed,
            "entities": counts.iter().map(|(t, n)| (t.as_str().to_owned(), json!(n))).collect::<Map<String, Value>>(),
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!("server       {} ({})", session.server, if reachable { "reachable" } else { "unreachable" });
    println!("user         {}", session.email);
    println!("tenant       {} ({})", session.tenant_name.unwrap_or_default(), session.tenant.unwrap_or_default());
    match &st.watcher {
        Some(w) => println!(
            "connection   {} via `finwise sync --watch` (pid {}) since {}",
            state_word(w.state),
            w.pid,
            w.since
        ),
        None => println!(
            "connection   none (no `finwise sync --watch` running on this store; `finwise sync` connects once)"
        ),
    }
    println!(
        "queue        {} pending, {} in flight, {} failed",
        st.queue.pending, st.queue.processing, st.queue.failed
    );
    println!("cursor       {}", st.cursor.map(|c| c.to_string()).unwrap_or_else(|| "none (never synced)".into()));
    println!("last sync    {}", st.last_sync.as_deref().unwrap_or("never"));
    let conv = match st.converged {
        Some(true) => "yes (digest equals the server's at the last check)",
        Some(false) => "NO: run `finwise sync --full`",
        None if st.queue.pending + st.queue.processing > 0 => "not yet: local changes are queued",
        None if st.server_digest.is_some() => "not known: changed since the last check (`finwise sync` checks)",
        None => "not checked yet",
    };
    println!("in sync      {conv}");
    println!("digest       {}", st.local_digest);
    if let Some(off) = st.clock_offset_ms.filter(|o| o.abs() >= 2000) {
        let dir = if off > 0 { "ahead of" } else { "behind" };
        let warn = if off > 240_000 { ": changes will be refused (clock_skew); set the clock right" } else { "" };
        println!("clock        {:.0} s {dir} the server's{warn}", off.abs() as f64 / 1000.0);
    }
    if let Some(e) = st.last_error.as_deref().filter(|e| !e.is_empty()) {
        println!("last error   {e}");
    }
    let summary: Vec<String> =
        counts.iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{n} {}", noun(*t).1)).collect();
    println!("local data   {}", if summary.is_empty() { "empty".to_owned() } else { summary.join(", ") });
    if !failed.is_empty() {
        println!("\nfailed entries (kept for inspection; `finwise sync --retry-failed` sends them again):");
        let rows = failed
            .iter()
            .map(|e| {
                vec![
                    e.id.chars().take(8).collect(),
                    e.entity_type.to_string(),
                    e.entity_id.chars().take(8).collect(),
                    e.operation.as_str().to_owned(),
                    e.reason.clone().unwrap_or_default(),
                    e.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["ENTRY", "TYPE", "ENTITY", "OP", "REASON", "DETAIL"], rows);
    }
    if !reachable {
        println!("\nthe server is unreachable: changes stay queued; run `finwise sync` when it is back");
    }
    Ok(())
}
