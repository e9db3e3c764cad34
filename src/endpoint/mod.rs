//! The startup-phase endpoint (DESIGN.md "Endpoint"): `/livez`, `/startupz`, `/readyz`,
//! `/status`, `/metrics`.
//!
//! The core is pure: [`respond`] turns a request line and the current [`Status`] into a reply,
//! so every route, the token check, the `?verbose` text, the JSON and the Prometheus text are
//! table-tested without a socket. [`server`] is the thin hyper shell around it: the listener,
//! the bounds that keep slow or malicious clients from stalling it, and the watch channel it
//! reads the status from.
//!
//! What a reply may show: the phases, their outcomes and details (which the log shows too),
//! the database by backend, host and name, never a URL or a password. With
//! `STARTGATE_STATUS_TOKEN` set, `/status` and `/metrics` need the token, and the probes'
//! non-200 bodies say only the phase, so the open probe paths give nothing away.

pub mod server;

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::phase::{Phase, PhaseRecord};
use crate::progress::Status;

/// What [`respond`] needs of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The `Authorization` header's value, when there is one.
    pub authorization: Option<&'a [u8]>,
}

/// A reply: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn new(status: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
        }
    }
}

/// Answers one request. `token` is `STARTGATE_STATUS_TOKEN`; `now` is the time durations of
/// running phases are measured to.
pub fn respond(
    request: &Request<'_>,
    status: &Status,
    token: Option<&str>,
    now: SystemTime,
) -> Reply {
    if request.method != "GET" && request.method != "HEAD" {
        return Reply::new(405, TEXT, "only GET and HEAD are served\n".to_string());
    }
    let verbose = request.query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    let machine = &status.machine;
    let phase = machine.phase();
    match request.path {
        "/livez" => probe(
            true,
            "livez",
            &[("ping", true)],
            verbose,
            status,
            token,
            now,
        ),
        "/startupz" => {
            let up = machine.started_up();
            probe(
                up,
                "startupz",
                &[(phase_check(phase), up)],
                verbose,
                status,
                token,
                now,
            )
        }
        "/readyz" => {
            let checks = [
                (phase_check(phase), phase == Phase::Ready),
                ("app-probe", app_passed(status)),
            ];
            probe(
                ready(status),
                "readyz",
                &checks,
                verbose,
                status,
                token,
                now,
            )
        }
        "/status" | "/metrics" if !authorized(request.authorization, token) => Reply::new(
            401,
            TEXT,
            "this endpoint needs Authorization: Bearer <STARTGATE_STATUS_TOKEN>\n".to_string(),
        ),
        "/status" => Reply::new(200, JSON, status_json(status, now).to_string() + "\n"),
        "/metrics" => Reply::new(200, PROMETHEUS, metrics(status, now)),
        _ => Reply::new(
            404,
            TEXT,
            "not found; try /livez, /startupz, /readyz, /status or /metrics\n".to_string(),
        ),
    }
}

/// Whether the app's last probe passed.
fn app_passed(status: &Status) -> bool {
    status.facts.app.as_ref().is_some_and(|a| a.last_passed)
}

/// `ready` as `/readyz`, `/status` and `/metrics` say it: the phase is `ready` and the app's
/// last probe passed.
fn ready(status: &Status) -> bool {
    status.machine.phase() == Phase::Ready && app_passed(status)
}

/// `phase-<name>` check names for the verbose text, as kube-apiserver names its checks.
fn phase_check(phase: Phase) -> &'static str {
    match phase {
        Phase::Ready => "phase-ready",
        Phase::Done => "phase-done",
        _ => "phase",
    }
}

/// A probe path: 200 with `ok` (or the verbose checks) when `passed`, else 503 with the JSON
/// status (only the phase when a token guards `/status`), or the verbose checks.
fn probe(
    passed: bool,
    name: &str,
    checks: &[(&str, bool)],
    verbose: bool,
    status: &Status,
    token: Option<&str>,
    now: SystemTime,
) -> Reply {
    let code = if passed { 200 } else { 503 };
    if verbose {
        let mut text = String::new();
        for (check, ok) in checks {
            let _ = writeln!(
                text,
                "[{}]{check} {}",
                if *ok { '+' } else { '-' },
                if *ok { "ok" } else { "failed" }
            );
        }
        let phase = status.machine.phase();
        let _ = writeln!(text, "phase: {phase}");
        if let (Some(failure), None) = (status.machine.failure(), token) {
            let _ = writeln!(text, "failure: {}", failure.reason);
        }
        let _ = writeln!(
            text,
            "{name} check {}",
            if passed { "passed" } else { "failed" }
        );
        return Reply::new(code, TEXT, text);
    }
    if passed {
        return Reply::new(200, TEXT, "ok\n".to_string());
    }
    let body = match token {
        Some(_) => json!({
            "phase": status.machine.phase().as_str(),
            "ready": false,
        }),
        None => status_json(status, now),
    };
    Reply::new(503, JSON, body.to_string() + "\n")
}

/// `Authorization: Bearer <token>`, compared in constant time; always true without a token.
fn authorized(header: Option<&[u8]>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let expected = token.as_bytes();
    // Constant time in the token's content; only its length can leak, as with any such check.
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn record_json(record: &PhaseRecord, now: SystemTime) -> Value {
    json!({
        "phase": record.phase.as_str(),
        "started": rfc3339(record.started),
        "duration_ms": record.duration(now).as_millis() as u64,
        "outcome": record.outcome.as_ref().map(|o| o.kind()),
        "detail": record.outcome.as_ref().and_then(|o| o.detail()),
    })
}

/// `/status`: DESIGN.md's fields, in a stable order.
pub fn status_json(status: &Status, now: SystemTime) -> Value {
    let machine = &status.machine;
    let facts = &status.facts;
    let backup = machine
        .records()
        .iter()
        .rev()
        .find(|r| r.phase == Phase::BackingUp)
        .map(|r| {
            json!({
                "outcome": r.outcome.as_ref().map(|o| o.kind()),
                "detail": r.outcome.as_ref().and_then(|o| o.detail()),
            })
        });
    json!({
        "phase": machine.phase().as_str(),
        "ready": ready(status),
        "failure": machine.failure().map(|f| json!({
            "phase": f.phase.as_str(),
            "reason": f.reason,
            "exit_code": f.exit_code,
        })),
        "phases": machine.records().iter().map(|r| record_json(r, now)).collect::<Vec<_>>(),
        "database": facts.database.as_ref().map(|d| json!({
            "backend": d.backend,
            "host": d.host,
            "name": d.name,
        })),
        "migrations": {
            "applied": facts.migrations.applied,
            "pending": facts.migrations.pending,
            "current": facts.migrations.current,
        },
        "backup": backup,
        "app": facts.app.as_ref().map(|a| json!({
            "pid": a.pid,
            "probe": a.probe,
            "attempts": a.attempts,
            "last_result": a.last_result,
            "diagnosis": a.diagnosis,
            "stderr": a.stderr,
        })),
    })
}

/// The `# HELP` and `# TYPE` lines of one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `/metrics`: Prometheus text exposition format 0.0.4.
pub fn metrics(status: &Status, now: SystemTime) -> String {
    let machine = &status.machine;
    let facts = &status.facts;
    let mut out = String::new();
    family(
        &mut out,
        "startgate_build_info",
        "gauge",
        "startgate's version; always 1.",
    );
    let _ = writeln!(
        out,
        "startgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "startgate_phase",
        "gauge",
        "1 for the current startup phase, 0 for the others.",
    );
    for phase in Phase::ALL {
        let _ = writeln!(
            out,
            "startgate_phase{{phase=\"{phase}\"}} {}",
            u8::from(machine.phase() == phase)
        );
    }
    family(
        &mut out,
        "startgate_ready",
        "gauge",
        "1 when the app is ready and its last probe passed.",
    );
    let _ = writeln!(out, "startgate_ready {}", u8::from(ready(status)));
    family(
        &mut out,
        "startgate_phase_duration_seconds",
        "gauge",
        "How long each phase took (the latest time it ran), or has taken so far.",
    );
    for phase in Phase::ALL {
        if let Some(record) = machine.records().iter().rev().find(|r| r.phase == phase) {
            let _ = writeln!(
                out,
                "startgate_phase_duration_seconds{{phase=\"{phase}\"}} {:.3}",
                record.duration(now).as_secs_f64()
            );
        }
    }
    family(
        &mut out,
        "startgate_migrations_applied_total",
        "counter",
        "Migrations applied by this run.",
    );
    let _ = writeln!(
        out,
        "startgate_migrations_applied_total {}",
        facts.migrations.applied
    );
    family(
        &mut out,
        "startgate_probe_attempts_total",
        "counter",
        "Probes of the app so far.",
    );
    let attempts = facts.app.as_ref().map_or(0, |a| a.attempts);
    let _ = writeln!(out, "startgate_probe_attempts_total {attempts}");
    family(
        &mut out,
        "startgate_startup_duration_seconds",
        "gauge",
        "From start to ready (or done), once reached.",
    );
    if let Some(reached) = machine
        .records()
        .iter()
        .find(|r| matches!(r.phase, Phase::Ready | Phase::Done))
    {
        let took = reached
            .started
            .duration_since(machine.started())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "startgate_startup_duration_seconds {:.3}",
            took.as_secs_f64()
        );
    }
    out
}

#[cfg(test)]
mod tests;
