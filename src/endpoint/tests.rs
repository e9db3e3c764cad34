//! Table tests of the endpoint's pure core: routes, codes, token, verbose text, JSON, metrics.

use std::time::{Duration, SystemTime};

use super::*;
use crate::phase::{Event, Machine, Outcome};
use crate::progress::{AppFacts, DatabaseFacts, Facts, Status};

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
}

/// A status that went through `events`, one every 10 ms.
fn status(events: Vec<Event>, app: Option<AppFacts>) -> Status {
    let mut machine = Machine::new(at(0));
    for (i, event) in events.into_iter().enumerate() {
        machine
            .apply(event, at(10 * (i as u64 + 1)))
            .expect("a valid event");
    }
    Status {
        machine,
        facts: Facts {
            database: Some(DatabaseFacts {
                backend: "postgres",
                host: Some("db.internal".to_string()),
                name: Some("app".to_string()),
            }),
            app,
            ..Facts::default()
        },
    }
}

fn migrating() -> Status {
    status(
        vec![
            Event::Enter(Phase::WaitingForDatabase),
            Event::Enter(Phase::AcquiringLock),
            Event::Enter(Phase::BackingUp),
            Event::Outcome(Outcome::Skipped("nothing to back up".to_string())),
            Event::Enter(Phase::Migrating),
        ],
        None,
    )
}

fn ready(last_passed: bool) -> Status {
    status(
        vec![
            Event::Enter(Phase::StartingApp),
            Event::Enter(Phase::ProbingApp),
            Event::Enter(Phase::Ready),
        ],
        Some(AppFacts {
            pid: Some(812),
            probe: "http://localhost:8000/".to_string(),
            attempts: 4,
            last_passed,
            last_result: Some("200 OK".to_string()),
            diagnosis: None,
            stderr: vec!["INFO: Application startup complete.".to_string()],
        }),
    )
}

fn get<'a>(path: &'a str, query: Option<&'a str>, auth: Option<&'a [u8]>) -> Request<'a> {
    Request {
        method: "GET",
        path,
        query,
        authorization: auth,
    }
}

fn code(request: Request<'_>, status: &Status, token: Option<&str>) -> u16 {
    respond(&request, status, token, at(1000)).status
}

#[test]
fn codes_by_path_phase_and_token() {
    let token = Some("s3cret");
    let bearer: &[u8] = b"Bearer s3cret";
    let wrong: &[u8] = b"Bearer s3cres";
    let cases: Vec<(Request<'_>, Status, Option<&str>, u16)> = vec![
        (get("/livez", None, None), migrating(), None, 200),
        (get("/livez", None, None), migrating(), token, 200),
        (get("/startupz", None, None), migrating(), None, 503),
        (get("/readyz", None, None), migrating(), None, 503),
        (get("/startupz", None, None), ready(true), None, 200),
        (get("/readyz", None, None), ready(true), None, 200),
        // Ready, but the last probe failed: started up, not ready.
        (get("/startupz", None, None), ready(false), None, 200),
        (get("/readyz", None, None), ready(false), None, 503),
        (get("/status", None, None), migrating(), None, 200),
        (get("/status", None, None), migrating(), token, 401),
        (get("/status", None, Some(wrong)), migrating(), token, 401),
        (get("/status", None, Some(bearer)), migrating(), token, 200),
        (get("/metrics", None, None), migrating(), token, 401),
        (get("/metrics", None, Some(bearer)), migrating(), token, 200),
        (get("/nope", None, None), migrating(), None, 404),
        (
            Request {
                method: "POST",
                ..get("/livez", None, None)
            },
            migrating(),
            None,
            405,
        ),
    ];
    for (request, status, token, expected) in cases {
        assert_eq!(
            code(request, &status, token),
            expected,
            "{} {} token={token:?}",
            request.method,
            request.path
        );
    }
}

#[test]
fn a_probe_that_fails_answers_with_the_status_json_unless_a_token_guards_it() {
    let open = respond(&get("/startupz", None, None), &migrating(), None, at(1000));
    assert_eq!(open.content_type, "application/json");
    let body: Value = serde_json::from_str(&open.body).expect("json");
    assert_eq!(body["phase"], "migrating");
    assert_eq!(body["database"]["host"], "db.internal");

    let guarded = respond(
        &get("/startupz", None, None),
        &migrating(),
        Some("t"),
        at(1000),
    );
    let body: Value = serde_json::from_str(&guarded.body).expect("json");
    assert_eq!(body, json!({"phase": "migrating", "ready": false}));
}

#[test]
fn verbose_lists_each_check_like_kube_apiserver() {
    let reply = respond(
        &get("/readyz", Some("verbose"), None),
        &ready(false),
        None,
        at(1000),
    );
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "[+]phase-ready ok\n[-]app-probe failed\nphase: ready\nreadyz check failed\n"
    );
    let reply = respond(
        &get("/livez", Some("verbose=1"), None),
        &migrating(),
        None,
        at(1000),
    );
    assert_eq!(
        reply.body,
        "[+]ping ok\nphase: migrating\nlivez check passed\n"
    );
}

#[test]
fn status_json_has_every_field_of_the_contract() {
    let reply = respond(&get("/status", None, None), &migrating(), None, at(1000));
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    for key in [
        "phase",
        "ready",
        "failure",
        "phases",
        "database",
        "migrations",
        "backup",
        "app",
    ] {
        assert!(body.get(key).is_some(), "{key} missing in {body}");
    }
    assert_eq!(body["ready"], false);
    assert_eq!(body["backup"]["outcome"], "skipped");
    assert_eq!(body["backup"]["detail"], "nothing to back up");
    let phases = body["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 5);
    assert_eq!(phases[0]["phase"], "starting");
    assert_eq!(phases[0]["duration_ms"], 10);
    assert_eq!(phases[0]["started"], "2027-01-15T08:00:00.000Z");
    // The running phase has no outcome yet and counts up to now.
    assert_eq!(phases[4]["outcome"], Value::Null);
    assert_eq!(phases[4]["duration_ms"], 950);
}

#[test]
fn a_failure_is_in_status_and_verbose_text() {
    let failed = status(
        vec![
            Event::Enter(Phase::WaitingForDatabase),
            Event::Fail {
                reason: "database not reachable within 60s".to_string(),
                exit_code: 3,
            },
        ],
        None,
    );
    let body: Value =
        serde_json::from_str(&respond(&get("/status", None, None), &failed, None, at(100)).body)
            .expect("json");
    assert_eq!(
        body["failure"],
        json!({"phase": "waiting_for_database", "reason": "database not reachable within 60s", "exit_code": 3})
    );
    let verbose = respond(
        &get("/startupz", Some("verbose"), None),
        &failed,
        None,
        at(100),
    );
    assert!(
        verbose
            .body
            .contains("failure: database not reachable within 60s"),
        "{}",
        verbose.body
    );
    let guarded = respond(
        &get("/startupz", Some("verbose"), None),
        &failed,
        Some("t"),
        at(100),
    );
    assert!(!guarded.body.contains("failure:"), "{}", guarded.body);
}

#[test]
fn metrics_are_valid_prometheus_text_with_every_family() {
    let text = metrics(&ready(true), at(1000));
    for family in [
        "startgate_build_info",
        "startgate_phase",
        "startgate_ready",
        "startgate_phase_duration_seconds",
        "startgate_migrations_applied_total",
        "startgate_probe_attempts_total",
        "startgate_startup_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} in\n{text}"
        );
    }
    assert!(
        text.contains("startgate_phase{phase=\"ready\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("startgate_phase{phase=\"migrating\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("startgate_ready 1\n"), "{text}");
    assert!(
        text.contains("startgate_probe_attempts_total 4\n"),
        "{text}"
    );
    assert!(
        text.contains("startgate_startup_duration_seconds 0.030\n"),
        "{text}"
    );
    // Every sample line is `name{labels} value` with a number, every family has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("name and value");
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        assert!(name.starts_with("startgate_"), "{line:?}");
    }
    // Before ready, there is no startup duration sample (only its HELP and TYPE).
    let before = metrics(&migrating(), at(1000));
    assert!(
        !before
            .lines()
            .any(|l| l.starts_with("startgate_startup_duration_seconds ")),
        "{before}"
    );
}

#[test]
fn the_token_check_needs_the_whole_token() {
    assert!(authorized(None, None));
    assert!(authorized(Some(b"anything"), None));
    assert!(authorized(Some(b"Bearer abc"), Some("abc")));
    for given in [
        &b"Bearer ab"[..],
        b"Bearer abcd",
        b"bearer abc",
        b"abc",
        b"Bearer  abc",
    ] {
        assert!(
            !authorized(Some(given), Some("abc")),
            "{:?}",
            String::from_utf8_lossy(given)
        );
    }
    assert!(!authorized(None, Some("abc")));
}
