//! A small HTTP/1.1 keep-alive load generator: the client side of the endpoint throughput
//! benchmark (`bench/supervise.py`, the `/readyz` figure).
//!
//! ```text
//! loadgen ADDR PATH [--connections 16] [--seconds 5] [--threads 1] [--warmup 1]
//! ```
//!
//! It opens `--connections` TCP connections to `ADDR` (`127.0.0.1:8080`), spread over
//! `--threads` OS threads that each run their own current-thread tokio runtime, and on each
//! connection sends `GET PATH HTTP/1.1` again and again, one request in flight per connection
//! (closed loop, no pipelining). It reads each response's status line and `Content-Length` to
//! find where the response ends (a response without `Content-Length`, chunked or not, counts as
//! an error). The first `--warmup` seconds are not recorded; then, for `--seconds`, every
//! request that starts in the window is timed from the first byte written to the last byte
//! read. A connection the server closes is reopened (counted in `reconnects`); an I/O or parse
//! error counts in `errors` and the connection is reopened.
//!
//! Output: one JSON line on stdout,
//! `{"requests":…,"seconds":…,"rps":…,"p50_ms":…,"p90_ms":…,"p99_ms":…,"max_ms":…,"non_200":…,
//! "errors":…,"reconnects":…,"connections":…,"threads":…}`, where `requests` counts completed
//! responses of any status and `non_200` those whose status was not 200. Bad arguments print a
//! message and exit with status 2; a failure to connect at all exits with status 1.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "usage: loadgen ADDR PATH [--connections N] [--seconds S] [--threads T] [--warmup S]\n\
    ADDR is host:port (e.g. 127.0.0.1:8080), PATH starts with / (e.g. /readyz)";

/// The largest response head accepted; the endpoint's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// How long to wait before reopening a connection after an error, so a dead server is not
/// hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    path: String,
    connections: usize,
    seconds: f64,
    threads: usize,
    warmup: f64,
}

fn bad_args(message: &str) -> ! {
    eprintln!("loadgen: {message}\n{USAGE}");
    process::exit(2);
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut connections = 16usize;
    let mut seconds = 5.0f64;
    let mut threads = 1usize;
    let mut warmup = 1.0f64;
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].as_str();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        if !name.starts_with("--") {
            positional.push(arg.to_string());
            i += 1;
            continue;
        }
        if name == "--help" || name == "-h" {
            println!("{USAGE}");
            process::exit(0);
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                argv.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))?
            }
        };
        match name {
            "--connections" => connections = parse_count(name, &value)?,
            "--threads" => threads = parse_count(name, &value)?,
            "--seconds" => seconds = parse_seconds(name, &value, false)?,
            "--warmup" => warmup = parse_seconds(name, &value, true)?,
            _ => return Err(format!("unknown option {name}")),
        }
        i += 1;
    }
    let [addr, path] = positional.as_slice() else {
        return Err(format!(
            "expected ADDR and PATH, got {} positional argument(s)",
            positional.len()
        ));
    };
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        return Err(format!(
            "PATH {path:?} must start with / and hold no spaces or control characters"
        ));
    }
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("ADDR {addr:?} is not host:port: {e}"))?
        .next()
        .ok_or_else(|| format!("ADDR {addr:?} resolves to no address"))?;
    Ok(Args {
        addr,
        path: path.clone(),
        connections,
        seconds,
        threads: threads.min(connections),
        warmup,
    })
}

fn parse_count(name: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} {value:?}: expected a whole number from 1 to 10000"
        )),
    }
}

fn parse_seconds(name: &str, value: &str, zero_ok: bool) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s <= 3600.0 => Ok(s),
        _ => Err(format!(
            "{name} {value:?}: expected a number of seconds{} up to 3600",
            if zero_ok { ", 0 or more," } else { " above 0" }
        )),
    }
}

/// What one connection (or, merged, the whole run) counted.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of every recorded request, in microseconds.
    latencies_us: Vec<u32>,
    non_200: u64,
    errors: u64,
    reconnects: u64,
    /// The first error seen, to explain a run that got nothing.
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.non_200 += other.non_200;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

/// Where one response ended and its status.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    status: u16,
    /// Length of head and body together.
    total: usize,
}

/// Parses the response at the start of `buf`: `Ok(None)` while the head is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("response head longer than {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "bad status line {:?}",
                String::from_utf8_lossy(&status_line[..status_line.len().min(80)])
            )
        })?;
    let mut length = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..])
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad Content-Length")?;
            length = Some(value);
        }
    }
    let length = length.ok_or("response without Content-Length")?;
    Ok(Some(Parsed {
        status,
        total: end + 4 + length,
    }))
}

/// Sends one request and reads its response; returns the status. `buf` is reused.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<u16, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let mut parsed: Option<Parsed> = None;
    loop {
        if let Some(p) = &parsed {
            if buf.len() >= p.total {
                if buf.len() > p.total {
                    return Err("bytes after the response (nothing was pipelined)".into());
                }
                return Ok(p.status);
            }
        } else if let Some(p) = parse_head(buf)? {
            parsed = Some(p);
            continue;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                String::new() // the server closed an idle keep-alive connection
            } else {
                "connection closed mid-response".into()
            });
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    Ok(stream)
}

/// One connection's loop: requests until `end`, recording those that start at or after
/// `record_from`.
async fn drive(
    addr: SocketAddr,
    request: Arc<[u8]>,
    record_from: Instant,
    end: Instant,
    give_up: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    let mut stream: Option<TcpStream> = None;
    let mut ever_connected = false;
    while Instant::now() < end && !give_up.load(Ordering::Relaxed) {
        let mut s = match stream.take() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => {
                    if ever_connected {
                        tally.reconnects += 1;
                    }
                    ever_connected = true;
                    s
                }
                Err(e) => {
                    tally.error(e);
                    if !ever_connected {
                        // Never reached the server: no point in the whole run.
                        give_up.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        match exchange(&mut s, &request, &mut buf).await {
            Ok(status) => {
                let done = Instant::now();
                if started >= record_from && started < end {
                    let us = done.duration_since(started).as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    if status != 200 {
                        tally.non_200 += 1;
                    }
                }
                stream = Some(s);
            }
            Err(e) if e.is_empty() => {} // closed while idle: reopen, not an error
            Err(e) => {
                if started >= record_from {
                    tally.error(e);
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    tally
}

/// One OS thread: a current-thread runtime driving `connections` connections.
fn thread_main(
    args: &Args,
    connections: usize,
    request: Arc<[u8]>,
    record_from: Instant,
    end: Instant,
    give_up: Arc<AtomicBool>,
) -> Tally {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let mut t = Tally::default();
            t.error(format!("cannot start a tokio runtime: {e}"));
            give_up.store(true, Ordering::Relaxed);
            return t;
        }
    };
    let addr = args.addr;
    runtime.block_on(async move {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                tokio::spawn(drive(
                    addr,
                    request.clone(),
                    record_from,
                    end,
                    give_up.clone(),
                ))
            })
            .collect();
        let mut tally = Tally::default();
        for task in tasks {
            match task.await {
                Ok(t) => tally.merge(t),
                Err(e) => tally.error(format!("connection task failed: {e}")),
            }
        }
        tally
    })
}

/// The `q`-quantile (0..=1) of sorted microseconds, in milliseconds (nearest rank).
fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(message) => bad_args(&message),
    };
    let request: Arc<[u8]> = Arc::from(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: startgate-loadgen\r\n\r\n",
            args.path, args.addr
        )
        .into_bytes(),
    );
    let start = Instant::now();
    let record_from = start + Duration::from_secs_f64(args.warmup);
    let end = record_from + Duration::from_secs_f64(args.seconds);
    let give_up = Arc::new(AtomicBool::new(false));

    let mut handles = Vec::with_capacity(args.threads);
    for t in 0..args.threads {
        // Spread the connections as evenly as possible.
        let share =
            args.connections / args.threads + usize::from(t < args.connections % args.threads);
        let (a, r, g) = (args.clone(), request.clone(), give_up.clone());
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || thread_main(&a, share, r, record_from, end, g));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("loadgen: cannot start a thread: {e}");
                process::exit(1);
            }
        }
    }
    let mut tally = Tally::default();
    for h in handles {
        match h.join() {
            Ok(t) => tally.merge(t),
            Err(_) => tally.error("a loadgen thread panicked".into()),
        }
    }
    if give_up.load(Ordering::Relaxed) {
        eprintln!(
            "loadgen: giving up: {}",
            tally.first_error.as_deref().unwrap_or("unknown error")
        );
        process::exit(1);
    }
    if let Some(e) = &tally.first_error {
        eprintln!("loadgen: {} error(s), the first: {e}", tally.errors);
    }
    tally.latencies_us.sort_unstable();
    let lat = &tally.latencies_us;
    let requests = lat.len();
    // Written by hand to keep the documented key order (serde_json's map sorts keys).
    let out = format!(
        concat!(
            "{{\"requests\":{},\"seconds\":{},\"rps\":{},\"p50_ms\":{},\"p90_ms\":{},",
            "\"p99_ms\":{},\"max_ms\":{},\"non_200\":{},\"errors\":{},\"reconnects\":{},",
            "\"connections\":{},\"threads\":{}}}"
        ),
        requests,
        args.seconds,
        round3(requests as f64 / args.seconds),
        quantile_ms(lat, 0.50),
        quantile_ms(lat, 0.90),
        quantile_ms(lat, 0.99),
        quantile_ms(lat, 1.0),
        tally.non_200,
        tally.errors,
        tally.reconnects,
        args.connections,
        args.threads,
    );
    println!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_head(response: &[u8], expected: Result<Option<(u16, usize)>, ()>) {
        let got = parse_head(response)
            .map(|p| p.map(|p| (p.status, p.total)))
            .map_err(|_| ());
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(response));
    }

    #[test]
    fn finds_the_end_of_a_response() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
        check_head(ok, Ok(Some((200, ok.len()))));
        check_head(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\n",
            Ok(Some((503, 66))),
        );
        check_head(b"HTTP/1.1 503 Service", Ok(None));
        check_head(b"HTTP/1.1 200 OK\r\n\r\n", Err(()));
        check_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Err(()));
        check_head(b"garbage\r\n\r\n", Err(()));
    }

    fn check_quantile(q: f64, expected_ms: f64) {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(quantile_ms(&v, q), expected_ms, "q={q}");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        check_quantile(0.0, 1.0);
        check_quantile(0.5, 50.0);
        check_quantile(0.99, 99.0);
        check_quantile(1.0, 100.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }

    fn check_args(line: &str, ok: bool) {
        let argv: Vec<String> = line.split(' ').map(String::from).collect();
        assert_eq!(parse_args(&argv).is_ok(), ok, "{line}");
    }

    #[test]
    fn validates_arguments() {
        check_args("127.0.0.1:80 /readyz --connections 4 --seconds 2", true);
        check_args("127.0.0.1:80 /readyz --threads=2 --warmup 0", true);
        check_args("127.0.0.1:80 /readyz --connections 0", false);
        check_args("127.0.0.1:80 readyz", false);
        check_args("127.0.0.1:80", false);
        check_args("127.0.0.1:80 /readyz --seconds abc", false);
        check_args("127.0.0.1:80 /readyz --seconds 0", false);
        check_args("127.0.0.1:80 /readyz --connections", false);
        check_args("127.0.0.1:80 /readyz --bogus 1", false);
    }
}
