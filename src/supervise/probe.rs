//! One probe of the app (DESIGN.md "Probing"): HTTP with hyper's client, TCP, or `exec:`.
//!
//! Rules:
//! - every attempt ends within the probe timeout, whatever the app does (a port that accepts
//!   and never answers is a result, "no answer", not a stall);
//! - `localhost` is tried on both `127.0.0.1` and `::1`: the first address that accepts the
//!   connection is probed; refused on every address is "connection refused";
//! - the answer is judged by a pure function ([`Answer::passes`]) and described in words
//!   ([`Answer::describe`]) for `/status` and the log;
//! - an `exec:` probe runs through `sh -c` in a process group of its own and is stopped (group
//!   and all) at the timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{HttpReady, Probe};
use crate::supervise::process;
use crate::supervise::signals::StopToken;

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer with this status code.
    Http(u16),
    /// The TCP port accepted the connection (a `tcp://` probe).
    Accepted,
    /// The `exec:` command exited with this code (`None`: killed by a signal); its last
    /// stderr line, if any.
    Exited(Option<i32>, Option<String>),
    /// Nothing listens on the port (every address refused).
    Refused,
    /// The connection was not accepted within the timeout.
    ConnectTimeout,
    /// The port accepted the connection but did not answer HTTP within the timeout.
    NoAnswer,
    /// The `exec:` command did not finish within the timeout.
    ExecTimeout,
    /// Anything else (a reset connection, a malformed answer, a name that does not resolve).
    Error(String),
}

impl Answer {
    /// Whether this answer counts as ready for `probe`.
    pub fn passes(&self, probe: &Probe) -> bool {
        match (self, probe) {
            (Answer::Http(code), Probe::Http { ready, .. }) => match ready {
                HttpReady::SuccessOrRedirect => (200..400).contains(code),
                HttpReady::BelowServerError => *code < 500,
            },
            (Answer::Accepted, Probe::Tcp { .. }) => true,
            (Answer::Exited(Some(0), _), Probe::Exec { .. }) => true,
            _ => false,
        }
    }

    /// The answer in words, for `/status` (`200 in 3 ms`, `connection refused`).
    pub fn describe(&self, elapsed: Duration, timeout: Duration) -> String {
        let ms = elapsed.as_millis();
        let limit = crate::duration::HumanDuration(timeout);
        match self {
            Answer::Http(code) => format!("HTTP {code} in {ms} ms"),
            Answer::Accepted => format!("accepted the connection in {ms} ms"),
            Answer::Exited(code, stderr) => {
                let mut text = match code {
                    Some(code) => format!("exited with status {code} in {ms} ms"),
                    None => format!("killed by a signal after {ms} ms"),
                };
                if let Some(line) = stderr {
                    text.push_str(&format!(": {line}"));
                }
                text
            }
            Answer::Refused => "connection refused".to_string(),
            Answer::ConnectTimeout => format!("the connection was not accepted within {limit}"),
            Answer::NoAnswer => {
                format!("accepted the connection but sent no answer within {limit}")
            }
            Answer::ExecTimeout => format!("did not finish within {limit}"),
            Answer::Error(e) => e.clone(),
        }
    }
}

/// The probe as `/status`, the log and a diagnosis show it: an `exec:` command line may hold
/// a secret, so it is masked.
pub fn shown(probe: &Probe) -> String {
    crate::redact::mask(&probe.to_string()).into_owned()
}

/// One attempt's result.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub answer: Answer,
    pub passed: bool,
    pub elapsed: Duration,
    /// [`Answer::describe`]'s words.
    pub result: String,
}

/// Probes once, within `timeout`.
pub async fn attempt(probe: &Probe, timeout: Duration) -> Attempt {
    let started = Instant::now();
    let answer = match probe {
        Probe::Http {
            host, port, path, ..
        } => http(host, *port, path, timeout).await,
        Probe::Tcp { host, port } => tcp(host, *port, timeout).await,
        Probe::Exec { command } => exec(command, timeout).await,
    };
    let elapsed = started.elapsed();
    Attempt {
        passed: answer.passes(probe),
        result: answer.describe(elapsed, timeout),
        answer,
        elapsed,
    }
}

/// The addresses to try for `host`: `localhost` is both loopbacks; an IP literal is itself;
/// a name is resolved.
pub async fn addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    tokio::net::lookup_host((host, port))
        .await
        .map(Iterator::collect)
        .map_err(|e| format!("cannot resolve {host}: {e}"))
}

/// Connects to the first address that accepts. `Err` is the answer to report.
async fn connect(host: &str, port: u16) -> Result<TcpStream, Answer> {
    let addrs = addresses(host, port).await.map_err(Answer::Error)?;
    let mut last = Answer::Refused;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            // An address family the machine lacks (no IPv6) is as good as refused.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT | libc::ENETUNREACH)
                ) => {}
            Err(e) => last = Answer::Error(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(last)
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, connect(host, port)).await {
        Ok(Ok(_)) => Answer::Accepted,
        Ok(Err(answer)) => answer,
        Err(_) => Answer::ConnectTimeout,
    }
}

async fn http(host: &str, port: u16, path: &str, timeout: Duration) -> Answer {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, connect(host, port)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(answer)) => return answer,
        Err(_) => return Answer::ConnectTimeout,
    };
    match tokio::time::timeout_at(deadline, request(stream, host, port, path)).await {
        Ok(Ok(code)) => Answer::Http(code),
        Ok(Err(e)) => Answer::Error(e),
        Err(_) => Answer::NoAnswer,
    }
}

/// Sends `GET path` on `stream` and returns the status code (the body is not read).
async fn request(stream: TcpStream, host: &str, port: u16, path: &str) -> Result<u16, String> {
    let (mut sender, mut connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "startgate-probe")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    // The connection must be driven while the response is awaited; it may also finish first
    // (the app answered and closed), and then the response is already there.
    let response = sender.send_request(request);
    tokio::pin!(response);
    let mut driving = true;
    loop {
        tokio::select! {
            biased;
            response = &mut response => {
                return response
                    .map(|r| r.status().as_u16())
                    .map_err(|e| format!("the app closed the connection without an HTTP answer: {e}"));
            }
            done = &mut connection, if driving => {
                driving = false;
                if let Err(e) = done {
                    return Err(format!("the app's answer was not HTTP: {e}"));
                }
            }
        }
    }
}

async fn exec(command: &str, timeout: Duration) -> Answer {
    let mut sh = tokio::process::Command::new("sh");
    sh.arg("-c").arg(command);
    match process::output_of(
        "the exec probe",
        sh,
        timeout,
        Duration::from_millis(500),
        &StopToken::never(),
    )
    .await
    {
        Ok((finished, _)) => {
            Answer::Exited(finished.status.code(), finished.stderr_tail.last().cloned())
        }
        Err(process::RunError::TimedOut { .. }) => Answer::ExecTimeout,
        Err(e) => Answer::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn http_probe(port: u16, ready: HttpReady) -> Probe {
        Probe::Http {
            host: "localhost".to_string(),
            port,
            path: "/health".to_string(),
            ready,
        }
    }

    #[test]
    fn judges_answers() {
        use HttpReady::*;
        let exec = Probe::Exec {
            command: "true".to_string(),
        };
        let tcp = Probe::Tcp {
            host: "localhost".to_string(),
            port: 1,
        };
        for (answer, probe, passes) in [
            (Answer::Http(200), http_probe(1, SuccessOrRedirect), true),
            (Answer::Http(302), http_probe(1, SuccessOrRedirect), true),
            (Answer::Http(404), http_probe(1, SuccessOrRedirect), false),
            (Answer::Http(404), http_probe(1, BelowServerError), true),
            (Answer::Http(499), http_probe(1, BelowServerError), true),
            (Answer::Http(500), http_probe(1, BelowServerError), false),
            (Answer::Http(503), http_probe(1, SuccessOrRedirect), false),
            (Answer::Accepted, tcp.clone(), true),
            (Answer::Accepted, http_probe(1, BelowServerError), false),
            (Answer::Refused, tcp.clone(), false),
            (Answer::NoAnswer, http_probe(1, BelowServerError), false),
            (Answer::Exited(Some(0), None), exec.clone(), true),
            (Answer::Exited(Some(1), None), exec.clone(), false),
            (Answer::Exited(None, None), exec.clone(), false),
            (Answer::ExecTimeout, exec, false),
        ] {
            assert_eq!(answer.passes(&probe), passes, "{answer:?} for {probe}");
        }
    }

    #[test]
    fn describes_answers_in_words() {
        let ms = Duration::from_millis(3);
        let limit = Duration::from_secs(2);
        for (answer, words) in [
            (Answer::Http(200), "HTTP 200 in 3 ms"),
            (Answer::Refused, "connection refused"),
            (
                Answer::NoAnswer,
                "accepted the connection but sent no answer within 2s",
            ),
            (
                Answer::Exited(Some(1), Some("not yet".to_string())),
                "exited with status 1 in 3 ms: not yet",
            ),
            (Answer::ExecTimeout, "did not finish within 2s"),
        ] {
            assert_eq!(answer.describe(ms, limit), words);
        }
    }

    /// A one-shot HTTP server answering `status` to the first request.
    async fn answer_once(status: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn http_probes_a_real_server() {
        let port = answer_once("200 OK").await;
        let attempt = attempt(
            &http_probe(port, HttpReady::SuccessOrRedirect),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(attempt.answer, Answer::Http(200));
        assert!(attempt.passed);

        let port = answer_once("503 Service Unavailable").await;
        let attempt = super::attempt(
            &http_probe(port, HttpReady::BelowServerError),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(attempt.answer, Answer::Http(503));
        assert!(!attempt.passed);
    }

    #[tokio::test]
    async fn a_port_that_accepts_but_never_answers_is_no_answer_within_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let attempt = attempt(
            &http_probe(port, HttpReady::BelowServerError),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(attempt.answer, Answer::NoAnswer);
        assert!(attempt.elapsed < Duration::from_secs(2), "{attempt:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_tcp_sees_an_open_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tcp = Probe::Tcp {
            host: "localhost".to_string(),
            port,
        };
        assert_eq!(
            attempt(&tcp, Duration::from_secs(2)).await.answer,
            Answer::Accepted
        );
        drop(listener);
        assert_eq!(
            attempt(&tcp, Duration::from_secs(2)).await.answer,
            Answer::Refused
        );
    }

    #[tokio::test]
    async fn exec_probes_judge_the_exit_status() {
        let pass = Probe::Exec {
            command: "exit 0".to_string(),
        };
        assert!(attempt(&pass, Duration::from_secs(5)).await.passed);
        let fail = Probe::Exec {
            command: "echo 'not ready yet' >&2; exit 1".to_string(),
        };
        let result = attempt(&fail, Duration::from_secs(5)).await;
        assert_eq!(
            result.answer,
            Answer::Exited(Some(1), Some("not ready yet".to_string()))
        );
        let slow = Probe::Exec {
            command: "sleep 30".to_string(),
        };
        let result = attempt(&slow, Duration::from_millis(200)).await;
        assert_eq!(result.answer, Answer::ExecTimeout);
        assert!(result.elapsed < Duration::from_secs(3));
    }
}
