//! `startgate watch` (DESIGN.md "`watch`"): probe an app in another container of the pod and
//! serve the endpoint until SIGTERM; no database work.
//!
//! Rules:
//! - probing as in `run` ([`Readiness`]): `/startupz` turns 200 when the app first passes,
//!   `/readyz` follows every probe after that;
//! - a missed deadline is reported (log, `/status`) and `watch` keeps serving: the diagnosis
//!   stays readable, `/startupz` stays 503, and a fresh deadline starts, so an app the kubelet
//!   restarts is judged again; an app that goes down after it was ready gets a fresh deadline;
//! - the diagnosis uses what `watch` can see: the port always (`/proc/net` is the pod's);
//!   the app's processes only when they are visible in `/proc` (a shared process namespace),
//!   and it says what it could not see;
//! - SIGTERM or SIGINT: exit 0.

use std::time::{Duration, Instant};

use crate::config::{Probe, Settings};
use crate::exit::Error;
use crate::phase::Phase;
use crate::progress::Progress;
use crate::supervise::app::{
    app_ready, hang_command, probe_port, record_attempt, report_hang, went_down,
};
use crate::supervise::diagnose::Observation;
use crate::supervise::probe;
use crate::supervise::readiness::{Change, Readiness};
use crate::supervise::signals::StopToken;
use crate::supervise::{inspect, reaper};

/// How long `watch` measures the app's CPU use for a diagnosis (it keeps no history).
const CPU_SAMPLE: Duration = Duration::from_secs(1);
/// More visible processes than this and `watch` cannot tell which are the app's (it is not in
/// a pod's shared namespace but on a host).
const MAX_POD_PROCESSES: usize = 32;

/// Probes until stopped; returns exit 0 on SIGTERM/SIGINT.
pub async fn watch(
    settings: &Settings,
    probe: &Probe,
    progress: &Progress,
    stop: &StopToken,
) -> Result<u8, Error> {
    progress.learn_app(|a| a.probe = probe::shown(probe));
    progress.enter(Phase::ProbingApp);
    let mut started = Instant::now();
    let mut readiness = Readiness::new(started, settings.startup_timeout, settings.probe_interval);
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            signal = stop.wait() => {
                progress.stop(signal.name());
                return Ok(crate::exit::code::SUCCESS);
            }
            attempt = async {
                tokio::time::sleep_until(next).await;
                let limit = readiness.attempt_limit(Instant::now(), settings.probe_timeout);
                probe::attempt(probe, limit).await
            } => {
                let now = Instant::now();
                record_attempt(progress, &attempt, None);
                match readiness.observe(attempt.passed, now) {
                    Change::Ready => {
                        progress.learn_app(|a| a.diagnosis = None);
                        app_ready(progress, started, &attempt.result);
                    }
                    Change::Down => {
                        went_down(progress, &attempt, settings.startup_timeout);
                        started = now;
                    }
                    Change::Missed => {
                        // Looking takes a second or more (a CPU sample, the hang command): a
                        // stop request does not wait for it.
                        let looked = async {
                            let observation = observe(settings, probe, &attempt.result).await;
                            let output = match (&settings.hang_command, observation.pid) {
                                (Some(command), Some(pid)) => {
                                    Some(hang_command(command, pid, settings.kill_grace).await)
                                }
                                _ => None,
                            };
                            (observation, output)
                        };
                        let (observation, output) = tokio::select! {
                            looked = looked => looked,
                            signal = stop.wait() => {
                                progress.stop(signal.name());
                                return Ok(crate::exit::code::SUCCESS);
                            }
                        };
                        report_hang(&observation.summary(), output.as_deref(), progress);
                        readiness.restart(Instant::now());
                        started = Instant::now();
                    }
                    Change::None => {}
                }
                next = tokio::time::Instant::from_std(readiness.next_attempt(Instant::now()));
            }
        }
    }
}

/// What `watch` can see of the app.
async fn observe(settings: &Settings, probe: &Probe, last_result: &str) -> Observation {
    let own = reaper::own_pid();
    let mut except = vec![own];
    except.extend(inspect::children_of(own).iter().map(|s| s.pid));
    let visible: Vec<inspect::Stat> = inspect::all_processes(&except)
        .into_iter()
        // The pod's sandbox holder is nobody's app.
        .filter(|s| s.comm != "pause")
        .collect();
    let port = probe_port(probe);
    // The process holding the probe's port, when one is visible, is the app.
    let holder = port.and_then(|port| {
        visible.iter().find(|s| {
            inspect::listening(&[s.pid])
                .0
                .iter()
                .any(|l| l.port == port)
        })
    });
    let mut unseen = Vec::new();
    let app: Vec<i32> = match holder {
        Some(holder) => visible
            .iter()
            .filter(|s| s.pgrp == holder.pgrp)
            .map(|s| s.pid)
            .collect(),
        // Nobody holds the port: in a pod's shared namespace the few visible processes are
        // the app's containers (described together, none named as the app); on a host they
        // are everything, and `watch` cannot tell.
        None if !visible.is_empty() && visible.len() <= MAX_POD_PROCESSES => {
            visible.iter().map(|s| s.pid).collect()
        }
        None => {
            unseen.push(if visible.is_empty() {
                "the app's processes (share the pod's process namespace: shareProcessNamespace: true)"
                    .to_string()
            } else {
                "which processes are the app's (none holds the probe's port)".to_string()
            });
            Vec::new()
        }
    };
    // Only the holder of the port is known to be the app: its pid is named, its threads
    // described, and the hang command run on it.
    let pid = holder.map(|h| h.pid);
    let cpu = if app.is_empty() {
        None
    } else {
        let before = inspect::cpu_seconds(&app);
        tokio::time::sleep(CPU_SAMPLE).await;
        let after = inspect::cpu_seconds(&app);
        Some((
            inspect::cpu_percent(before, after, CPU_SAMPLE.as_secs_f64()),
            CPU_SAMPLE,
        ))
    };
    let port_only = app.is_empty();
    let listening = if port_only {
        // The port is always visible: the pod shares one network namespace.
        Some(pod_listeners())
    } else {
        let (listeners, complete) = inspect::listening(&app);
        if !complete {
            unseen.push(
                "some of the app's sockets (another user's processes need SYS_PTRACE)".to_string(),
            );
        }
        let mut ports: Vec<u16> = listeners.iter().map(|l| l.port).collect();
        ports.dedup();
        Some(ports)
    };
    let threads = pid.map(inspect::threads).unwrap_or_default();
    Observation {
        timeout: settings.startup_timeout,
        probe: Some(probe::shown(probe)),
        last_result: Some(last_result.to_string()),
        pid,
        alive: pid.map(|_| true),
        processes: app.len(),
        cpu,
        listening,
        probe_port: port,
        threads: pid
            .filter(|_| !threads.is_empty())
            .map(|pid| inspect::describe_threads(pid, &threads)),
        stderr: None,
        unseen,
        port_only,
    }
}

/// Every TCP port listened on in this network namespace (the pod's).
fn pod_listeners() -> Vec<u16> {
    let mut ports: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| inspect::parse_listeners(&text))
        .map(|l| l.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
