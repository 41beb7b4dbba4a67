//! `/`: the status page for people, the same facts as `immish-sync status`, refreshing
//! itself every [`REFRESH_SECS`] with a meta refresh (no script, no external assets).

use std::fmt::Write as _;

use crate::db::meta::ConnectionState;
use crate::human::{ago, megabytes};
use crate::lock::Holder;
use crate::model::JobState;
use crate::status::Status;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 10;

/// Text made safe for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bad{color:#a00;font-weight:bold}.ok{color:#070}";

pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>immish-sync status</title><style>{STYLE}</style></head><body>\n\
         <h1>immish-sync</h1>\n<table id=\"summary\">\n"
    );
    let row = |o: &mut String, id: &str, label: &str, value: &str, class: &str| {
        let _ = writeln!(
            o,
            "<tr><th>{label}</th><td id=\"{id}\" class=\"{class}\">{}</td></tr>",
            esc(value)
        );
    };
    let daemon = match &s.daemon {
        Some(Holder { pid: Some(pid) }) => format!("running (pid {pid})"),
        Some(Holder { pid: None }) => "running".to_owned(),
        None => "not running".to_owned(),
    };
    row(&mut o, "daemon", "daemon", &daemon, "");
    if let Some(a) = &s.activity {
        row(
            &mut o,
            "doing",
            "doing",
            &a.doing,
            if a.stale { "bad" } else { "" },
        );
    }
    if let Some(api) = &s.server {
        let server = match &s.server_info {
            Some(i) => format!(
                "{api} ({} {})",
                i.dialect,
                i.version.as_deref().unwrap_or("version unknown")
            ),
            None => api.clone(),
        };
        row(&mut o, "server", "server", &server, "");
    }
    if let Some(c) = &s.connection {
        let (text, class) = match c {
            ConnectionState::Connected { since_ms } => {
                (format!("connected since {}", ago(*since_ms)), "ok")
            }
            ConnectionState::Unreachable {
                since_ms, error, ..
            } => (
                format!("unreachable since {}: {error}", ago(*since_ms)),
                "bad",
            ),
            ConnectionState::Refused {
                since_ms, error, ..
            } => (
                format!("refuses the credentials since {}: {error}", ago(*since_ms)),
                "bad",
            ),
            ConnectionState::Paused {
                since_ms, reason, ..
            } => (
                format!("uploads paused since {}: {reason}", ago(*since_ms)),
                "bad",
            ),
        };
        row(&mut o, "connection", "connection", &text, class);
    }
    if let Some(p) = &s.paused {
        row(
            &mut o,
            "paused",
            "paused",
            &format!("by the user since {} {}", ago(p.since_ms), p.reason),
            "bad",
        );
    }
    let last = s.last_success_ms.map_or("never".to_owned(), ago);
    row(&mut o, "last-backup", "last backup", &last, "");
    if let Some(p) = &s.last_pull {
        row(&mut o, "last-pull", "last pull", &ago(p.at_ms), "");
    }
    o.push_str("</table>\n<h2>Files</h2>\n<table id=\"files\">\n");
    let total = |st: JobState| s.count(st);
    for (id, label, n, bad) in [
        ("backed_up", "backed up", total(JobState::Done), false),
        ("queued", "not backed up yet", s.queue_depth(), false),
        ("failed", "failed", total(JobState::Failed), true),
        (
            "held_back",
            "held back (deleted on the server)",
            s.held_back_deleted,
            false,
        ),
        (
            "trash_only",
            "only in the server's trash",
            s.in_trash_only,
            true,
        ),
        (
            "waiting",
            "waiting (look unfinished)",
            s.waiting.count,
            false,
        ),
        ("missing", "gone locally", s.missing_files, false),
    ] {
        let class = if bad && n > 0 { "n bad" } else { "n" };
        let _ = writeln!(
            o,
            "<tr><th>{label}</th><td id=\"{id}\" class=\"{class}\">{n}</td></tr>"
        );
    }
    o.push_str(
        "</table>\n<h2>Folders</h2>\n<table id=\"roots\">\n<tr><th>folder</th>\
                <th>state</th><th>files</th><th>backed up</th><th>queued</th><th>failed</th>\
                <th>held back</th><th>waiting</th><th>size</th></tr>\n",
    );
    for r in &s.roots {
        let f = &r.files;
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.path),
            if r.paused { "bad" } else { "ok" },
            esc(&r.state.to_string()),
            f.files,
            f.backed_up,
            f.queued,
            f.failed,
            f.held_back,
            f.waiting,
            megabytes(f.bytes.max(0) as u64)
        );
    }
    o.push_str("</table>\n");
    if !s.accounts.is_empty() {
        // Each account's own state and counters (docs/ARCHITECTURE.md#accounts).
        o.push_str(
            "<h2>Accounts</h2>\n<table id=\"accounts\">\n<tr><th>account</th><th>doing</th>\
             <th>backed up</th><th>queued</th><th>failed</th><th>uploaded since start</th></tr>\n",
        );
        for (name, a) in s.each_account() {
            let (doing, class) = match (&a.failed, &a.error, &a.activity) {
                (Some(why), _, _) => (format!("stopped: {why}"), "bad"),
                (_, Some(why), _) => (format!("cannot read its state: {why}"), "bad"),
                (_, _, Some(act)) => (act.doing.clone(), if act.stale { "bad" } else { "" }),
                _ => ("not running".to_owned(), ""),
            };
            let uploaded = a.activity.as_ref().map_or(0, |x| x.live.uploaded_files);
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"{class}\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{uploaded}</td></tr>",
                esc(name),
                esc(&doing),
                a.count(JobState::Done),
                a.queue_depth(),
                a.count(JobState::Failed),
            );
        }
        o.push_str("</table>\n");
    }
    if !s.failures.is_empty() {
        o.push_str("<h2>Recent problems</h2>\n<ul id=\"problems\">\n");
        for p in &s.failures {
            let _ = writeln!(
                o,
                "<li><code>{}</code>: {} ({} {})</li>",
                esc(&p.path),
                esc(p.reason.as_deref().unwrap_or("no reason recorded")),
                p.state.as_str(),
                ago(p.updated_at_ms)
            );
        }
        o.push_str("</ul>\n");
    }
    let _ = writeln!(
        o,
        "<p><small>Refreshes every {REFRESH_SECS} s. Also: <a href=\"/status.json\">status.json</a>, \
         <a href=\"/metrics\">metrics</a>, <a href=\"/healthz\">healthz</a>.</small></p>\n</body></html>"
    );
    o
}
