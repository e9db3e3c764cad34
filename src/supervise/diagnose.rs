//! Hang diagnosis (DESIGN.md "Hang diagnosis"): what startgate could see of an app that missed
//! its startup deadline, in one sentence an operator can act on.
//!
//! `app did not become ready within 30s: pid 812 alive, 0% CPU for the last 10s, not listening
//! on any port (probe http://localhost:8000/: connection refused); main thread sleeping in
//! futex_wait_queue; last stderr: "INFO: Waiting for application startup."`
//!
//! Rules:
//! - [`Observation`] is gathered from `/proc`, the last probe and the stderr tail by the I/O
//!   loops ([`crate::supervise::app`], [`crate::supervise::watch`]); [`Observation::summary`]
//!   is pure and table-tested;
//! - what could not be seen is said, never guessed (`watch` without a shared process namespace
//!   sees the port only);
//! - the summary fits the termination log (at most [`SUMMARY_LIMIT`] bytes, cut at a character
//!   boundary); the hang command's output is appended after it for the log and `/status`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::duration::HumanDuration;

/// The most a summary (and the termination log) holds, in bytes.
pub const SUMMARY_LIMIT: usize = 4096;
/// The window CPU use is measured over, at most.
pub const CPU_WINDOW: Duration = Duration::from_secs(10);
/// At or below this share of one core the app counts as idle.
const IDLE_PERCENT: f64 = 1.0;

/// What startgate saw of the app when its deadline passed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// `STARTGATE_STARTUP_TIMEOUT`.
    pub timeout: Duration,
    /// The probe, as configured, and its last result in words.
    pub probe: Option<String>,
    pub last_result: Option<String>,
    /// The app's pid, and whether it is alive (`None`: not known or not visible).
    pub pid: Option<i32>,
    pub alive: Option<bool>,
    /// How many processes make up the app (its group, or what `watch` can see).
    pub processes: usize,
    /// CPU share of one core, in percent, over this window.
    pub cpu: Option<(f64, Duration)>,
    /// The TCP ports the app's processes listen on (`None`: not visible).
    pub listening: Option<Vec<u16>>,
    /// Whether the app's processes were not visible, so `listening` says only whether anything
    /// in the network namespace listens on the probe's port.
    pub port_only: bool,
    /// The probe's port, when it has one.
    pub probe_port: Option<u16>,
    /// The main thread and the others, in words (`main thread sleeping in futex_wait_queue`).
    pub threads: Option<String>,
    /// The last lines of the app's stderr (masked); `None` when startgate cannot see it
    /// (`watch`).
    pub stderr: Option<Vec<String>>,
    /// What could not be seen, in words.
    pub unseen: Vec<String>,
}

impl Observation {
    /// The diagnosis in one sentence, at most [`SUMMARY_LIMIT`] bytes.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut process = String::new();
        if let Some(pid) = self.pid {
            process.push_str(&format!("pid {pid}"));
            match self.alive {
                Some(true) => process.push_str(" alive"),
                Some(false) => process.push_str(" gone"),
                None => {}
            }
            if self.processes > 1 {
                process.push_str(&format!(" ({} processes in its group)", self.processes));
            }
        } else if self.processes == 1 {
            process.push_str("1 visible process");
        } else if self.processes > 1 {
            process.push_str(&format!("{} visible processes", self.processes));
        }
        if !process.is_empty() {
            parts.push(process);
        }
        if let Some((percent, window)) = self.cpu {
            let secs = window.as_secs_f64().round().max(1.0) as u64;
            let what = if percent <= IDLE_PERCENT {
                "idle"
            } else {
                "busy"
            };
            parts.push(format!("{percent:.0}% CPU for the last {secs}s ({what})"));
        }
        let probe = match (&self.probe, &self.last_result) {
            (Some(probe), Some(result)) => format!(" (probe {probe}: {result})"),
            (Some(probe), None) => format!(" (probe {probe})"),
            _ => String::new(),
        };
        match (&self.listening, self.probe_port) {
            (Some(ports), Some(port)) if self.port_only => {
                if ports.contains(&port) {
                    parts.push(format!("something listens on port {port}{probe}"))
                } else {
                    parts.push(format!("nothing listens on port {port}{probe}"))
                }
            }
            (Some(ports), _) if ports.is_empty() => {
                parts.push(format!("not listening on any port{probe}"))
            }
            (Some(ports), _) => {
                let list = ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let on_probe_port = self.probe_port.is_some_and(|p| ports.contains(&p));
                match self.probe_port {
                    Some(port) if !on_probe_port => parts.push(format!(
                        "listening on {list} but not on the probe's port {port}{probe}"
                    )),
                    _ => parts.push(format!("listening on {list}{probe}")),
                }
            }
            (None, _) if !probe.is_empty() => parts.push(probe.trim_start().to_string()),
            (None, _) => {}
        }
        let mut text = format!(
            "app did not become ready within {}",
            HumanDuration(self.timeout)
        );
        if !parts.is_empty() {
            text.push_str(": ");
            text.push_str(&parts.join(", "));
        }
        if let Some(threads) = &self.threads {
            text.push_str(&format!("; {threads}"));
        }
        match self.stderr.as_deref() {
            None => {}
            Some([]) => text.push_str("; no stderr output"),
            Some([.., last]) => text.push_str(&format!("; last stderr: {last:?}")),
        }
        if !self.unseen.is_empty() {
            text.push_str(&format!("; not visible: {}", self.unseen.join(", ")));
        }
        cut(text, SUMMARY_LIMIT)
    }
}

/// `text` cut to at most `limit` bytes at a character boundary, with `…` when cut.
pub fn cut(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut at = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    text.push('…');
    text
}

/// CPU readings of the app over time, so that a diagnosis can say how busy it was over the
/// last [`CPU_WINDOW`]. Takes at most one reading a second.
#[derive(Debug, Clone, Default)]
pub struct CpuHistory {
    readings: VecDeque<(Instant, f64)>,
}

impl CpuHistory {
    /// Whether a reading is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.readings
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
    }

    /// Records `seconds` of CPU used in all at `now`.
    pub fn record(&mut self, now: Instant, seconds: f64) {
        self.readings.push_back((now, seconds));
        // Keep the newest reading older than the window (the window's start) and what follows.
        while self.readings.len() > 2
            && self
                .readings
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= CPU_WINDOW)
        {
            self.readings.pop_front();
        }
    }

    /// The share of one core used between the oldest reading within the window and `seconds`
    /// now; `None` with no earlier reading.
    pub fn usage(&self, now: Instant, seconds: f64) -> Option<(f64, Duration)> {
        let (at, before) = self
            .readings
            .iter()
            .find(|(at, _)| now.duration_since(*at) <= CPU_WINDOW + Duration::from_millis(500))?;
        let window = now.duration_since(*at);
        if window < Duration::from_millis(100) {
            return None;
        }
        Some((
            super::inspect::cpu_percent(*before, seconds, window.as_secs_f64()),
            window,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hung() -> Observation {
        Observation {
            timeout: Duration::from_secs(30),
            probe: Some("http://localhost:8000/".to_string()),
            last_result: Some("connection refused".to_string()),
            pid: Some(812),
            alive: Some(true),
            processes: 1,
            cpu: Some((0.0, Duration::from_secs(10))),
            listening: Some(vec![]),
            probe_port: Some(8000),
            threads: Some("main thread sleeping in futex_wait_queue".to_string()),
            stderr: Some(vec![
                "INFO: Started server process [812]".to_string(),
                "INFO: Waiting for application startup.".to_string(),
            ]),
            unseen: vec![],
            port_only: false,
        }
    }

    #[test]
    fn summaries() {
        let listening_mute = Observation {
            cpu: Some((0.4, Duration::from_secs(10))),
            listening: Some(vec![8000]),
            last_result: Some("accepted the connection but sent no answer within 2s".to_string()),
            threads: Some("main thread sleeping in inet_csk_accept".to_string()),
            ..hung()
        };
        let busy_elsewhere = Observation {
            cpu: Some((98.6, Duration::from_secs(10))),
            listening: Some(vec![9000, 9001]),
            processes: 3,
            stderr: Some(vec![]),
            ..hung()
        };
        let watched_blind = Observation {
            pid: None,
            alive: None,
            processes: 0,
            cpu: None,
            threads: None,
            stderr: None,
            port_only: true,
            listening: Some(vec![]),
            unseen: vec!["the app's processes (no shared process namespace)".to_string()],
            ..hung()
        };
        for (observation, expected) in [
            (
                hung(),
                "app did not become ready within 30s: pid 812 alive, 0% CPU for the last 10s \
                 (idle), not listening on any port (probe http://localhost:8000/: connection \
                 refused); main thread sleeping in futex_wait_queue; last stderr: \"INFO: \
                 Waiting for application startup.\"",
            ),
            (
                listening_mute,
                "app did not become ready within 30s: pid 812 alive, 0% CPU for the last 10s \
                 (idle), listening on 8000 (probe http://localhost:8000/: accepted the \
                 connection but sent no answer within 2s); main thread sleeping in \
                 inet_csk_accept; last stderr: \"INFO: Waiting for application startup.\"",
            ),
            (
                busy_elsewhere,
                "app did not become ready within 30s: pid 812 alive (3 processes in its \
                 group), 99% CPU for the last 10s (busy), listening on 9000, 9001 but not on \
                 the probe's port 8000 (probe http://localhost:8000/: connection refused); \
                 main thread sleeping in futex_wait_queue; no stderr output",
            ),
            (
                watched_blind,
                "app did not become ready within 30s: nothing listens on port 8000 (probe \
                 http://localhost:8000/: connection refused); not visible: the app's processes \
                 (no shared process namespace)",
            ),
        ] {
            assert_eq!(observation.summary(), expected);
        }
    }

    #[test]
    fn summaries_fit_the_termination_log() {
        let long = Observation {
            stderr: Some(vec!["é".repeat(5000)]),
            ..hung()
        };
        let summary = long.summary();
        assert!(summary.len() <= SUMMARY_LIMIT, "{}", summary.len());
        assert!(summary.ends_with('…'));
        assert_eq!(cut("short".to_string(), 10), "short");
    }

    #[test]
    fn cpu_history_measures_over_the_last_ten_seconds() {
        let t0 = Instant::now();
        let mut history = CpuHistory::default();
        assert!(history.due(t0));
        assert_eq!(history.usage(t0, 0.0), None);
        for s in 0..30u64 {
            let now = t0 + Duration::from_secs(s);
            assert!(history.due(now));
            // Busy for the first 15 s, idle after.
            history.record(now, s.min(15) as f64);
            assert!(!history.due(now + Duration::from_millis(500)));
        }
        let now = t0 + Duration::from_secs(30);
        let (percent, window) = history.usage(now, 15.0).expect("usage");
        assert_eq!(percent, 0.0);
        assert_eq!(window, Duration::from_secs(10));
        let mut history = CpuHistory::default();
        for s in 0..=20u64 {
            history.record(t0 + Duration::from_secs(s), s.min(15) as f64);
        }
        let (percent, window) = history
            .usage(t0 + Duration::from_secs(20), 15.0)
            .expect("usage");
        assert_eq!(window, Duration::from_secs(10));
        assert!((percent - 50.0).abs() < 0.01, "{percent}");
    }
}
