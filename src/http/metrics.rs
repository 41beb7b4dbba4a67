//! `/metrics`: the Prometheus text format (version 0.0.4), every name prefixed
//! `immish_sync_` (docs/STATUS.md#metrics). Like `status --json`, an interface: names and
//! labels are only ever added.

use std::fmt::Write as _;

use crate::db::meta::ConnectionState;
use crate::model::JobState;
use crate::status::Status;

/// One metric family: its `# HELP` and `# TYPE` lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "immish_sync_{name}");
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP immish_sync_{name} {help}");
    let _ = writeln!(out, "# TYPE immish_sync_{name} {kind}");
    Family { out }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// A gauge with one sample per account: its name, help, and its value in a status.
type Gauge = (&'static str, &'static str, fn(&Status) -> i64);

/// The metrics of `s`; `healthy` is what `/healthz` answers. Every family of an account's
/// own (its database, its counters) has an `account` label; `healthy` and the start time
/// are the process's.
pub fn render(s: &Status, healthy: bool) -> String {
    let mut out = String::new();
    let o = &mut out;
    // Each account with the value of its `account` label, from its own database.
    let all = s.each_account();
    family(o, "healthy", "gauge", "1 while /healthz answers 200.").sample(
        "healthy",
        &[],
        u8::from(healthy),
    );

    let mut f = family(
        o,
        "files",
        "gauge",
        "Files present locally, by the state of their job.",
    );
    for (a, s) in &all {
        for c in &s.counts {
            f.sample(
                "files",
                &[("account", a), ("state", c.state.as_str())],
                c.count,
            );
        }
    }
    let gauges: [Gauge; 5] = [
        (
            "files_missing",
            "Files gone from their root locally.",
            |s| s.missing_files,
        ),
        (
            "files_held_back",
            "Files not uploaded because their photo was deleted or trashed on the server.",
            |s| s.held_back_deleted,
        ),
        (
            "files_trash_only",
            "Files whose only server copy is in the server's trash (not backed up).",
            |s| s.in_trash_only,
        ),
        (
            "files_waiting",
            "Files not taken yet because they look unfinished.",
            |s| s.waiting.count,
        ),
        (
            "queue_depth",
            "Files not backed up yet: queued, in flight, or waiting to retry.",
            |s| s.queue_depth(),
        ),
    ];
    for (name, help, get) in gauges {
        let mut f = family(o, name, "gauge", help);
        for (a, s) in &all {
            f.sample(name, &[("account", a)], get(s));
        }
    }

    let mut f = family(o, "root_files", "gauge", "Files present in each root.");
    for (a, s) in &all {
        for r in &s.roots {
            f.sample(
                "root_files",
                &[("account", a), ("root", &r.path)],
                r.files.files,
            );
        }
    }
    let mut f = family(
        o,
        "root_backed_up_files",
        "gauge",
        "Files of each root that are on the server.",
    );
    for (a, s) in &all {
        for r in &s.roots {
            f.sample(
                "root_backed_up_files",
                &[("account", a), ("root", &r.path)],
                r.files.backed_up,
            );
        }
    }
    let mut f = family(
        o,
        "root_paused",
        "gauge",
        "1 while a root is paused (missing, empty or unreadable).",
    );
    for (a, s) in &all {
        for r in &s.roots {
            f.sample(
                "root_paused",
                &[("account", a), ("root", &r.path)],
                u8::from(r.paused),
            );
        }
    }

    // Each account's counters since start, from its own engine (docs/STATUS.md#metrics).
    type Counter = fn(&crate::db::meta::LiveState) -> u64;
    let n = |s: &Status, get: Counter| s.activity.as_ref().map_or(0, |a| get(&a.live));
    let counters: [(&str, &str, Counter); 3] = [
        (
            "uploaded_files_total",
            "Files uploaded since the daemon started.",
            |l| l.uploaded_files,
        ),
        (
            "uploaded_bytes_total",
            "Bytes of the files uploaded since the daemon started.",
            |l| l.uploaded_bytes,
        ),
        (
            "duplicate_files_total",
            "Files found already on the server since the daemon started (not sent).",
            |l| l.duplicates,
        ),
    ];
    for (name, help, get) in counters {
        let mut f = family(o, name, "counter", help);
        for (a, s) in &all {
            f.sample(name, &[("account", a)], n(s, get));
        }
    }
    let mut f = family(
        o,
        "errors_total",
        "counter",
        "Upload errors since the daemon started: permanent (the file failed) or transient \
         (retried).",
    );
    for (a, s) in &all {
        f.sample(
            "errors_total",
            &[("account", a), ("kind", "permanent")],
            n(s, |l| l.failed),
        );
        f.sample(
            "errors_total",
            &[("account", a), ("kind", "transient")],
            n(s, |l| l.retries),
        );
    }
    let mut f = family(
        o,
        "account_failed",
        "gauge",
        "1 once an account stopped with an error (its state broken) while the others go on.",
    );
    for (a, s) in &all {
        f.sample(
            "account_failed",
            &[("account", a)],
            u8::from(s.failed.is_some() || s.error.is_some()),
        );
    }
    let live = s.activity.as_ref().map(|a| &a.live);

    if all.iter().any(|(_, s)| s.last_success_ms.is_some()) {
        let mut f = family(
            o,
            "last_success_timestamp_seconds",
            "gauge",
            "When a file was last backed up (unix time).",
        );
        for (a, s) in &all {
            if let Some(ms) = s.last_success_ms {
                f.sample(
                    "last_success_timestamp_seconds",
                    &[("account", a)],
                    seconds(ms),
                );
            }
        }
    }
    if all.iter().any(|(_, s)| s.last_pull.is_some()) {
        let mut f = family(
            o,
            "last_pull_timestamp_seconds",
            "gauge",
            "When the last pull of the server's assets that completed began (unix time).",
        );
        for (a, s) in &all {
            if let Some(p) = &s.last_pull {
                f.sample(
                    "last_pull_timestamp_seconds",
                    &[("account", a)],
                    seconds(p.at_ms),
                );
            }
        }
    }
    if let Some(l) = live {
        family(
            o,
            "start_timestamp_seconds",
            "gauge",
            "When the daemon started (unix time).",
        )
        .sample("start_timestamp_seconds", &[], seconds(l.started_ms));
    }

    let states: Vec<(&str, &Status, (u8, u8, u8))> = all
        .iter()
        .map(|&(a, s)| {
            let c = match &s.connection {
                Some(ConnectionState::Connected { .. }) => (1, 0, 0),
                Some(ConnectionState::Unreachable { .. } | ConnectionState::Refused { .. }) => {
                    (0, 1, 0)
                }
                Some(ConnectionState::Paused { .. }) => (1, 0, 1),
                None => (0, 0, 0),
            };
            (a, s, c)
        })
        .collect();
    let mut f = family(o, "connected", "gauge", "1 while the server answers.");
    for (a, _, (connected, _, _)) in &states {
        f.sample("connected", &[("account", a)], connected);
    }
    let mut f = family(
        o,
        "outage",
        "gauge",
        "1 while the server is unreachable or refuses the credentials.",
    );
    for (a, _, (_, outage, _)) in &states {
        f.sample("outage", &[("account", a)], outage);
    }
    if states
        .iter()
        .any(|(_, s, (_, outage, _))| *outage == 1 && s.connection.is_some())
    {
        let mut f = family(
            o,
            "outage_since_timestamp_seconds",
            "gauge",
            "When the current outage began (unix time).",
        );
        for (a, s, (_, outage, _)) in &states {
            if let (Some(c), 1) = (&s.connection, outage) {
                f.sample(
                    "outage_since_timestamp_seconds",
                    &[("account", a)],
                    seconds(c.since_ms()),
                );
            }
        }
    }
    let mut f = family(
        o,
        "paused",
        "gauge",
        "1 while uploads are paused, by who paused them: the user, or the daemon (server \
         full, a permission missing).",
    );
    for (a, s, (_, _, paused)) in &states {
        f.sample(
            "paused",
            &[("account", a), ("by", "user")],
            u8::from(s.paused.is_some()),
        );
        f.sample("paused", &[("account", a), ("by", "daemon")], paused);
    }
    let mut f = family(
        o,
        "failed_files",
        "gauge",
        "Files that failed for good (retried when they change, or with `retry`).",
    );
    for (a, s) in &all {
        f.sample("failed_files", &[("account", a)], s.count(JobState::Failed));
    }
    out
}
