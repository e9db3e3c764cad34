//! Reading `/proc` for the hang diagnosis: which processes belong to the app, what their threads
//! are waiting in, how much CPU they used, and which TCP ports they listen on.
//!
//! The file has two layers. Pure parsers ([`parse_stat`], [`socket_inode`], [`parse_listeners`],
//! [`state_word`], [`describe_threads`], [`cpu_percent`]) turn `/proc` text into values and values
//! into words; they are table-tested with realistic text. Thin readers ([`group_members`],
//! [`children_of`], [`all_processes`], [`cpu_seconds`], [`listening`], [`threads`]) read `/proc`
//! and hand the text to the parsers.
//!
//! Rules for the readers:
//! - Processes and threads vanish at any moment. Every failed read about one pid or tid (gone,
//!   permission denied, malformed text) skips that pid or tid; no reader returns an error, and a
//!   diagnosis built from what remains is still worth printing.
//! - The only incompleteness a caller is told about is [`listening`]'s `complete` flag, because
//!   "no port open" and "could not look" lead an operator to different conclusions.
//! - Nothing here writes to `/proc`, sends signals, or spawns processes (those belong to the rest
//!   of [`crate::supervise`]).
//! - `/proc/net/tcp{,6}` describe the network namespace of the reader (startgate), which is the
//!   app's namespace when startgate runs the app; a `watch` in another namespace sees nothing.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Where the kernel mounts the process filesystem; the readers take it as a parameter internally
/// so that tests can point them at a fake tree.
const PROC: &str = "/proc";

/// The socket state `TCP_LISTEN` as printed in the `st` column of `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// The socket state `TCP_ESTABLISHED`.
const TCP_ESTABLISHED: &str = "01";

/// Clock ticks per second assumed when `sysconf(_SC_CLK_TCK)` fails; it is 100 on every Linux
/// architecture startgate targets.
const FALLBACK_CLK_TCK: f64 = 100.0;

/// One line of /proc/PID/stat (or /proc/PID/task/TID/stat), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The process (or thread) id, field 1.
    pub pid: i32,
    /// The command name without its parentheses, at most 15 bytes (the kernel truncates it).
    pub comm: String,
    /// The state letter, field 3 (see [`state_word`]).
    pub state: char,
    /// The parent's pid, field 4.
    pub ppid: i32,
    /// The process group id, field 5.
    pub pgrp: i32,
    /// User-mode CPU time in clock ticks, field 14.
    pub utime: u64,
    /// Kernel-mode CPU time in clock ticks, field 15.
    pub stime: u64,
}

/// Parses stat text. comm is inside parentheses and may contain spaces and ')' — use the LAST ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    // Fields after the command, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let mut state_chars = field(3)?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    Some(Stat {
        pid,
        comm,
        state,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
    })
}

/// "socket:[12345]" -> Some(12345); anything else None.
pub fn socket_inode(link: &str) -> Option<u64> {
    let digits = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A listening TCP socket from /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The socket's inode, which links it to the `socket:[N]` entries of `/proc/PID/fd`.
    pub inode: u64,
    /// The local port.
    pub port: u16,
    /// The local address: `0.0.0.0` or `::` for every interface.
    pub address: IpAddr,
}

/// Parses /proc/net/tcp or /proc/net/tcp6 text (header line first), keeping only LISTEN rows
/// (st == 0A). Addresses are hex in host byte order per 32-bit word (little-endian on x86):
/// 0100007F:1F40 is 127.0.0.1:8000; tcp6 has 32 hex digits as four 32-bit words, each
/// byte-swapped. Malformed rows are skipped.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    // The header ("sl local_address ...") fails the `sl` check like any malformed row.
    text.lines().filter_map(parse_listener_row).collect()
}

/// One row of `/proc/net/tcp{,6}`: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
/// None for a malformed row or one not in the LISTEN state.
fn parse_listener_row(line: &str) -> Option<Listener> {
    let row = parse_tcp_row(line)?;
    (row.state == TCP_LISTEN).then_some(Listener {
        inode: row.inode,
        port: row.local.1,
        address: row.local.0,
    })
}

/// The columns of one `/proc/net/tcp{,6}` row that startgate reads.
struct TcpRow<'a> {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: &'a str,
    inode: u64,
}

fn parse_tcp_row(line: &str) -> Option<TcpRow<'_>> {
    let mut columns = line.split_ascii_whitespace();
    let slot = columns.next()?.strip_suffix(':')?;
    slot.parse::<u64>().ok()?;
    let local = parse_endpoint(columns.next()?)?;
    let remote = parse_endpoint(columns.next()?)?;
    let state = columns.next()?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, then the inode.
    let inode = columns.nth(5)?.parse().ok()?;
    Some(TcpRow {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F40` -> (127.0.0.1, 8000).
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    Some((
        parse_proc_address(address)?,
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// An established TCP connection from /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub inode: u64,
    /// This side's address and port: what a server sees as the client's
    /// (`pg_stat_activity.client_addr`, `client_port`) when no NAT lies between.
    pub local_address: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
}

/// Parses /proc/net/tcp or /proc/net/tcp6 text, keeping only ESTABLISHED rows (st == 01).
pub fn parse_connections(text: &str) -> Vec<Connection> {
    text.lines()
        .filter_map(parse_tcp_row)
        .filter(|row| row.state == TCP_ESTABLISHED)
        .map(|row| Connection {
            inode: row.inode,
            local_address: row.local.0.to_canonical(),
            local_port: row.local.1,
            remote_port: row.remote.1,
        })
        .collect()
}

/// A `/proc/net/tcp{,6}` address: 8 or 32 hex digits, each group of 8 being a 32-bit word the
/// kernel printed as a host-order integer although it holds network-order bytes. Writing each
/// word back in native byte order recovers the address bytes on any host.
fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let word = |i: usize| -> Option<[u8; 4]> {
        let digits = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(digits, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// What a process or thread is doing, in words: state letter to word: R running, S sleeping,
/// D "uninterruptible wait (disk or kernel)", Z zombie, T stopped, t "stopped (traced)", X dead,
/// I idle, others "state X".
pub fn state_word(state: char) -> String {
    match state {
        'R' => "running".to_owned(),
        'S' => "sleeping".to_owned(),
        'D' => "uninterruptible wait (disk or kernel)".to_owned(),
        'Z' => "zombie".to_owned(),
        'T' => "stopped".to_owned(),
        't' => "stopped (traced)".to_owned(),
        'X' => "dead".to_owned(),
        'I' => "idle".to_owned(),
        other => format!("state {other}"),
    }
}

/// The contents of `/proc/PID/task/TID/wchan` as a kernel function name. The kernel prints "0"
/// for a running thread or when the reader may not see it. Compiler-made clones carry suffixes
/// (`poll_schedule_timeout.constprop.0`, `foo.isra.0`, `foo.part.0`, `foo.cold`) that mean
/// nothing to an operator, so everything from the first dot is dropped: kernel symbols have no
/// dot of their own.
fn parse_wchan(text: &str) -> Option<String> {
    let name = text.trim().split('.').next().unwrap_or_default();
    if name.is_empty() || name == "0" {
        None
    } else {
        Some(name.to_owned())
    }
}

/// Processes whose process group is `pgid` (scan /proc/[0-9]*/stat). Processes that vanish
/// mid-scan are skipped silently.
pub fn group_members(pgid: i32) -> Vec<Stat> {
    group_members_in(Path::new(PROC), pgid)
}

fn group_members_in(root: &Path, pgid: i32) -> Vec<Stat> {
    let mut stats = scan(root);
    stats.retain(|stat| stat.pgrp == pgid);
    stats
}

/// Direct children of `ppid` (for orphan reaping: zombies among them have state 'Z').
pub fn children_of(ppid: i32) -> Vec<Stat> {
    children_of_in(Path::new(PROC), ppid)
}

fn children_of_in(root: &Path, ppid: i32) -> Vec<Stat> {
    let mut stats = scan(root);
    stats.retain(|stat| stat.ppid == ppid);
    stats
}

/// Every visible process except those in `except` (for `watch`, which does not know the app's
/// pid). Kernel threads are visible too when startgate shares the host's pid namespace.
pub fn all_processes(except: &[i32]) -> Vec<Stat> {
    all_processes_in(Path::new(PROC), except)
}

fn all_processes_in(root: &Path, except: &[i32]) -> Vec<Stat> {
    let mut stats = scan(root);
    stats.retain(|stat| !except.contains(&stat.pid));
    stats
}

/// Every process under `root` whose stat could be read and parsed, sorted by pid.
fn scan(root: &Path) -> Vec<Stat> {
    let mut stats: Vec<Stat> = numeric_entries(root)
        .into_iter()
        .filter_map(|pid| read_stat(&root.join(pid.to_string())))
        .collect();
    stats.sort_by_key(|stat| stat.pid);
    stats
}

/// The numeric entry names of a directory (pids in `/proc`, tids in `/proc/PID/task`); an
/// unreadable directory has none.
fn numeric_entries(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Reads and parses `DIR/stat` for a process or task directory; None if it vanished.
fn read_stat(dir: &Path) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)
}

/// Total CPU time (utime+stime) of these pids, in seconds as f64 (clock ticks /
/// sysconf(_SC_CLK_TCK)), re-reading their stat now. Gone pids count 0.
pub fn cpu_seconds(pids: &[i32]) -> f64 {
    cpu_seconds_in(Path::new(PROC), pids, clock_ticks_per_second())
}

fn cpu_seconds_in(root: &Path, pids: &[i32], ticks_per_second: f64) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| read_stat(&root.join(pid.to_string())))
        .map(|stat| stat.utime.saturating_add(stat.stime))
        .fold(0, u64::saturating_add);
    ticks as f64 / ticks_per_second
}

/// The unit of `utime` and `stime`.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value; it has no preconditions and touches no memory
    // of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        FALLBACK_CLK_TCK
    } else {
        ticks as f64
    }
}

/// The listening TCP sockets owned by these pids: every /proc/PID/fd/* link that is a socket,
/// matched against the LISTEN rows of /proc/net/tcp and /proc/net/tcp6 (read once; they describe
/// the caller's network namespace). Returns the listeners sorted by port and deduplicated (forked
/// workers share one socket), and `complete`, false when some pid's fd directory could not be
/// read (permission denied: another user's process). A pid that is gone does not make the answer
/// incomplete.
pub fn listening(pids: &[i32]) -> (Vec<Listener>, bool) {
    listening_in(Path::new(PROC), pids)
}

fn listening_in(root: &Path, pids: &[i32]) -> (Vec<Listener>, bool) {
    let (inodes, complete) = socket_inodes(root, pids);
    if inodes.is_empty() {
        return (Vec::new(), complete);
    }
    let mut listeners: Vec<Listener> = tcp_tables(root)
        .iter()
        .flat_map(|text| parse_listeners(text))
        .filter(|listener| inodes.binary_search(&listener.inode).is_ok())
        .collect();
    listeners.sort_by_key(|listener| (listener.port, listener.address, listener.inode));
    listeners.dedup();
    (listeners, complete)
}

/// The established TCP connections owned by these pids (a migrate command's database
/// sessions), sorted by local port and deduplicated; unreadable fd directories are skipped.
pub fn connections(pids: &[i32]) -> Vec<Connection> {
    connections_in(Path::new(PROC), pids)
}

fn connections_in(root: &Path, pids: &[i32]) -> Vec<Connection> {
    let (inodes, _) = socket_inodes(root, pids);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<Connection> = tcp_tables(root)
        .iter()
        .flat_map(|text| parse_connections(text))
        .filter(|c| inodes.binary_search(&c.inode).is_ok())
        .collect();
    found.sort_by_key(|c| (c.local_port, c.inode));
    found.dedup();
    found
}

/// The socket inodes of these pids' descriptors, sorted and deduplicated, and whether every
/// existing pid's fd directory could be read.
fn socket_inodes(root: &Path, pids: &[i32]) -> (Vec<u64>, bool) {
    let mut inodes = Vec::new();
    let mut complete = true;
    for pid in pids {
        let fd_dir = root.join(pid.to_string()).join("fd");
        let entries = match std::fs::read_dir(&fd_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == ErrorKind::NotFound => continue,
            Err(_) => {
                complete = false;
                continue;
            }
        };
        // A descriptor closed between the listing and the read_link is simply not there.
        inodes.extend(entries.filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            socket_inode(target.to_str()?)
        }));
    }
    inodes.sort_unstable();
    inodes.dedup();
    (inodes, complete)
}

/// The text of /proc/net/tcp and tcp6 (a kernel without IPv6 has no tcp6: no rows, no error).
fn tcp_tables(root: &Path) -> Vec<String> {
    let net = root.join("net");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(net.join(name)).ok())
        .collect()
}

/// One thread of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// The thread id; the main thread's equals the pid.
    pub tid: i32,
    /// The thread's name (`comm`), at most 15 bytes.
    pub name: String,
    /// The state letter (see [`state_word`]).
    pub state: char,
    /// The kernel function the thread sleeps in, without compiler suffixes; None when running
    /// or not visible.
    pub wchan: Option<String>,
}

/// The threads of `pid` from /proc/PID/task/*/{stat,wchan}. wchan "0" or empty or unreadable ->
/// None. Sorted by tid (the main thread has tid == pid).
pub fn threads(pid: i32) -> Vec<Thread> {
    threads_in(Path::new(PROC), pid)
}

fn threads_in(root: &Path, pid: i32) -> Vec<Thread> {
    let task_dir = root.join(pid.to_string()).join("task");
    let mut threads: Vec<Thread> = numeric_entries(&task_dir)
        .into_iter()
        .filter_map(|tid| {
            let dir = task_dir.join(tid.to_string());
            let stat = read_stat(&dir)?;
            let wchan = std::fs::read_to_string(dir.join("wchan"))
                .ok()
                .and_then(|text| parse_wchan(&text));
            Some(Thread {
                tid,
                name: stat.comm,
                state: stat.state,
                wchan,
            })
        })
        .collect();
    threads.sort_by_key(|thread| thread.tid);
    threads
}

/// "sleeping in do_epoll_wait", "running".
fn thread_activity(thread: &Thread) -> String {
    match &thread.wchan {
        Some(wchan) => format!("{} in {wchan}", state_word(thread.state)),
        None => state_word(thread.state),
    }
}

/// Pure: a one-line summary of threads for the diagnosis, e.g.
///  "main thread sleeping in futex_wait_queue" (single thread),
///  "main thread sleeping in futex_wait_queue; 3 other threads: 2 sleeping in ep_poll, 1 running"
/// (the others grouped by what they do, most common first, ties by name).
/// If `threads` is empty: "threads not visible". Main thread = the one whose tid == pid, else the
/// first.
pub fn describe_threads(pid: i32, threads: &[Thread]) -> String {
    let Some(first) = threads.first() else {
        return "threads not visible".to_owned();
    };
    let main_index = threads
        .iter()
        .position(|thread| thread.tid == pid)
        .unwrap_or(0);
    let main = threads.get(main_index).unwrap_or(first);
    let mut summary = format!("main thread {}", thread_activity(main));

    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (index, thread) in threads.iter().enumerate() {
        if index != main_index {
            *groups.entry(thread_activity(thread)).or_default() += 1;
        }
    }
    if groups.is_empty() {
        return summary;
    }
    let others = threads.len() - 1;
    let mut groups: Vec<(String, usize)> = groups.into_iter().collect();
    // The map is already sorted by name; a stable sort by count keeps that order for ties.
    groups.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let parts: Vec<String> = groups
        .iter()
        .map(|(activity, count)| format!("{count} {activity}"))
        .collect();
    let noun = if others == 1 { "thread" } else { "threads" };
    summary.push_str(&format!("; {others} other {noun}: {}", parts.join(", ")));
    summary
}

/// Pure: the CPU share as a percentage of one core over `window_secs` seconds, from two
/// [`cpu_seconds`] readings; never negative (a process that exited between the readings makes
/// the total drop), and 0 for an empty or invalid window.
pub fn cpu_percent(before: f64, after: f64, window_secs: f64) -> f64 {
    if !window_secs.is_finite() || window_secs <= 0.0 {
        return 0.0;
    }
    let percent = (after - before) / window_secs * 100.0;
    if percent.is_finite() {
        percent.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    // ---- parse_stat ----

    fn check_stat(text: &str, expected: Option<Stat>) {
        assert_eq!(parse_stat(text), expected, "parsing {text:?}");
    }

    fn stat(
        pid: i32,
        comm: &str,
        state: char,
        ppid: i32,
        pgrp: i32,
        utime: u64,
        stime: u64,
    ) -> Stat {
        Stat {
            pid,
            comm: comm.to_owned(),
            state,
            ppid,
            pgrp,
            utime,
            stime,
        }
    }

    #[test]
    fn parse_stat_table() {
        check_stat(
            "5686 (sleep) S 5683 5683 4887 0 -1 4194304 133 0 0 0 0 0 0 0 20 0 1 0 20079 2990080 413 \
             18446744073709551615 94464692752384 94464692770313 140732250660944 0 0 0 0 6 0 1 0 0 17 \
             1 0 0 0 0 0 94464692784400 94464692785664 94464967036928 140732250667742 \
             140732250667750 140732250667750 140732250669033 0\n",
            Some(stat(5686, "sleep", 'S', 5683, 5683, 0, 0)),
        );
        check_stat(
            "812 (postgres) R 1 812 812 0 -1 4194560 9921 0 3 0 1234 567 0 0 20 0 1 0 311 \
             221888512 6712 18446744073709551615 1 1 0 0 0 0 0 4096 536887815 0 0 0 17 0 0 0 0 0 0",
            Some(stat(812, "postgres", 'R', 1, 812, 1234, 567)),
        );
        check_stat(
            "4242 (my (weird) app) S 4200 4242 4200 34816 4242 4194304 100 0 0 0 7 3 0 0 20 0 4 0 \
             5000 10000 200 18446744073709551615",
            Some(stat(4242, "my (weird) app", 'S', 4200, 4242, 7, 3)),
        );
        check_stat(
            "77 (a) b) t 1 77 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1",
            Some(stat(77, "a) b", 't', 1, 77, 1, 2)),
        );
        check_stat(
            "9001 (worker) Z 9000 9000 9000 0 -1 4227084 0 0 0 0 5 1 0 0 20 0 1 0 7000 0 0 \
             18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0",
            Some(stat(9001, "worker", 'Z', 9000, 9000, 5, 1)),
        );
        // Malformed: empty, no parentheses, truncated, non-numeric fields, two-letter state.
        check_stat("", None);
        check_stat("123 sleep S 1 1", None);
        check_stat("123 (sleep) S 1 1 1 0 -1 0 0 0 0 0", None);
        check_stat("abc (sleep) S 1 1 1 0 -1 0 0 0 0 0 1 2 0 0", None);
        check_stat("12 (sleep) S x 1 1 0 -1 0 0 0 0 0 1 2 0 0", None);
        check_stat("12 (sleep) SS 1 1 1 0 -1 0 0 0 0 0 1 2 0 0", None);
        check_stat("12 )sleep( S 1 1 1 0 -1 0 0 0 0 0 1 2 0 0", None);
    }

    // ---- socket_inode ----

    #[test]
    fn socket_inode_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("socket:[12345]", Some(12345)),
            ("socket:[0]", Some(0)),
            ("socket:[]", None),
            ("socket:[12a]", None),
            ("socket:[+12]", None),
            ("socket:12345", None),
            ("pipe:[12345]", None),
            ("anon_inode:[eventpoll]", None),
            ("/dev/null", None),
            ("", None),
        ];
        for (link, expected) in cases {
            assert_eq!(socket_inode(link), *expected, "link {link:?}");
        }
    }

    // ---- parse_listeners ----

    fn listener(inode: u64, port: u16, address: &str) -> Listener {
        Listener {
            inode,
            port,
            address: address.parse().expect("test address"),
        }
    }

    // The expected addresses assume a little-endian host, as /proc prints host-order words.
    #[cfg(target_endian = "little")]
    #[test]
    fn parse_listeners_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 8531 1 000000002c6a3df9 100 0 0 10 0
   1: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 7293 1 00000000523d66c7 100 0 0 10 0
   2: 0100007F:1F40 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000        0 9911 1 0000000011111111 20 4 30 10 -1
   3: 0100007F:1538 0100007F:B00E 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000022222222
   4: 0200A8C0:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4411 1 0000000033333333 100 0 0 10 0
   5: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000044444444 100 0 0 10 0
   6: 0100007F:1F40 00000000:0000 0A 00000000:00000000
   7: ZZ00007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1
";
        assert_eq!(
            parse_listeners(text),
            vec![
                listener(8531, 8000, "127.0.0.1"),
                listener(7293, 5432, "0.0.0.0"),
                listener(4411, 443, "192.168.0.2"),
            ]
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parse_listeners_tcp6() {
        let text = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4574 1 00000000deb19ab4 100 0 0 10 0
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 7230 1 0000000003c62109 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 7777 1 0000000003c62109 20 4 0 10 -1
   3: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8888 1 0000000003c62109 100 0 0 10 0
   4: 0000000000000000000000000100000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0000000003c62109 100 0 0 10 0
";
        assert_eq!(
            parse_listeners(text),
            vec![
                listener(4574, 6379, "::1"),
                listener(7230, 8080, "::"),
                listener(8888, 80, "2001:db8::1"),
            ]
        );
    }

    #[test]
    fn parse_listeners_empty_and_header_only() {
        assert_eq!(parse_listeners(""), vec![]);
        assert_eq!(
            parse_listeners(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            ),
            vec![]
        );
    }

    // ---- state_word and wchan ----

    #[test]
    fn state_word_table() {
        let cases = [
            ('R', "running"),
            ('S', "sleeping"),
            ('D', "uninterruptible wait (disk or kernel)"),
            ('Z', "zombie"),
            ('T', "stopped"),
            ('t', "stopped (traced)"),
            ('X', "dead"),
            ('I', "idle"),
            ('P', "state P"),
            ('W', "state W"),
        ];
        for (state, expected) in cases {
            assert_eq!(state_word(state), expected, "state {state:?}");
        }
    }

    #[test]
    fn parse_wchan_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("do_epoll_wait", Some("do_epoll_wait")),
            ("futex_do_wait\n", Some("futex_do_wait")),
            (
                "poll_schedule_timeout.constprop.0",
                Some("poll_schedule_timeout"),
            ),
            ("pipe_read.isra.0", Some("pipe_read")),
            ("0", None),
            ("0\n", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_wchan(text).as_deref(), *expected, "wchan {text:?}");
        }
    }

    // ---- describe_threads ----

    fn thread(tid: i32, state: char, wchan: Option<&str>) -> Thread {
        Thread {
            tid,
            name: format!("t{tid}"),
            state,
            wchan: wchan.map(str::to_owned),
        }
    }

    fn check_describe(pid: i32, threads: &[Thread], expected: &str) {
        assert_eq!(describe_threads(pid, threads), expected);
    }

    #[test]
    fn describe_threads_table() {
        check_describe(10, &[], "threads not visible");
        check_describe(
            10,
            &[thread(10, 'S', Some("futex_wait_queue"))],
            "main thread sleeping in futex_wait_queue",
        );
        check_describe(10, &[thread(10, 'R', None)], "main thread running");
        check_describe(
            10,
            &[
                thread(10, 'S', Some("futex_wait_queue")),
                thread(11, 'R', None),
                thread(12, 'S', Some("ep_poll")),
                thread(13, 'S', Some("ep_poll")),
            ],
            "main thread sleeping in futex_wait_queue; 3 other threads: 2 sleeping in ep_poll, 1 running",
        );
        // Ties are ordered by name; the main thread is found by tid, not position.
        check_describe(
            12,
            &[
                thread(10, 'S', Some("pipe_read")),
                thread(11, 'D', Some("io_schedule")),
                thread(12, 'Z', None),
            ],
            "main thread zombie; 2 other threads: 1 sleeping in pipe_read, 1 uninterruptible wait (disk or kernel) in io_schedule",
        );
        // No thread has tid == pid (the main thread already exited): the first stands in.
        check_describe(
            99,
            &[
                thread(100, 'S', Some("do_wait")),
                thread(101, 'S', Some("do_wait")),
            ],
            "main thread sleeping in do_wait; 1 other thread: 1 sleeping in do_wait",
        );
    }

    // ---- cpu_percent ----

    #[test]
    fn cpu_percent_table() {
        let cases = [
            ((1.0, 1.5, 1.0), 50.0),
            ((0.0, 2.0, 1.0), 200.0),
            ((3.0, 3.0, 5.0), 0.0),
            ((2.0, 1.0, 1.0), 0.0),
            ((0.0, 1.0, 0.0), 0.0),
            ((0.0, 1.0, -1.0), 0.0),
            ((0.0, 1.0, f64::NAN), 0.0),
        ];
        for ((before, after, window), expected) in cases {
            let got = cpu_percent(before, after, window);
            assert!(
                (got - expected).abs() < 1e-9,
                "cpu_percent({before}, {after}, {window}) = {got}, expected {expected}"
            );
        }
    }

    // ---- readers against a fake /proc ----

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create fake proc dir");
        }
        std::fs::write(path, text).expect("write fake proc file");
    }

    fn fake_stat(pid: i32, comm: &str, state: char, ppid: i32, pgrp: i32) -> String {
        format!(
            "{pid} ({comm}) {state} {ppid} {pgrp} {pgrp} 0 -1 0 0 0 0 0 30 20 0 0 20 0 1 0 1 1 1"
        )
    }

    #[test]
    fn readers_skip_unreadable_and_malformed_entries() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        write(&root.join("100/stat"), &fake_stat(100, "app", 'S', 1, 100));
        write(
            &root.join("101/stat"),
            &fake_stat(101, "worker", 'Z', 100, 100),
        );
        write(
            &root.join("102/stat"),
            &fake_stat(102, "other", 'R', 1, 102),
        );
        write(&root.join("103/stat"), "garbage");
        std::fs::create_dir_all(root.join("104")).expect("dir without stat");
        write(&root.join("self/stat"), &fake_stat(100, "app", 'S', 1, 100));

        let pids = |stats: Vec<Stat>| stats.iter().map(|s| s.pid).collect::<Vec<_>>();
        assert_eq!(pids(group_members_in(root, 100)), vec![100, 101]);
        assert_eq!(pids(children_of_in(root, 100)), vec![101]);
        assert_eq!(pids(all_processes_in(root, &[100])), vec![101, 102]);
        assert!(group_members_in(&root.join("missing"), 100).is_empty());
        // 50 ticks each for 100 and 101; 105 is gone and counts 0.
        assert!((cpu_seconds_in(root, &[100, 101, 105], 100.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn fake_threads_are_sorted_and_wchan_normalised() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        write(
            &root.join("7/task/9/stat"),
            &fake_stat(9, "tokio-rt", 'R', 1, 7),
        );
        write(&root.join("7/task/9/wchan"), "0");
        write(&root.join("7/task/7/stat"), &fake_stat(7, "app", 'S', 1, 7));
        write(
            &root.join("7/task/7/wchan"),
            "poll_schedule_timeout.constprop.0",
        );
        write(&root.join("7/task/8/stat"), &fake_stat(8, "gc", 'S', 1, 7));
        write(&root.join("7/task/10/wchan"), "do_epoll_wait");
        assert_eq!(
            threads_in(root, 7),
            vec![
                Thread {
                    tid: 7,
                    name: "app".to_owned(),
                    state: 'S',
                    wchan: Some("poll_schedule_timeout".to_owned()),
                },
                Thread {
                    tid: 8,
                    name: "gc".to_owned(),
                    state: 'S',
                    wchan: None,
                },
                Thread {
                    tid: 9,
                    name: "tokio-rt".to_owned(),
                    state: 'R',
                    wchan: None,
                },
            ]
        );
        assert_eq!(threads_in(root, 8), vec![]);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn fake_listening_matches_inodes_and_reports_unreadable_fd_dirs() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        write(
            &root.join("net/tcp"),
            &format!(
                "{header}   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 501 1 0 100 0 0 10 0
   1: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 502 1 0 100 0 0 10 0
   2: 0100007F:1F40 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000        0 503 1 0 20 4 30 10 -1
"
            ),
        );
        // No tcp6: a kernel without IPv6.
        std::fs::create_dir_all(root.join("20/fd")).expect("fd dir");
        symlink("socket:[501]", root.join("20/fd/3")).expect("symlink");
        symlink("socket:[503]", root.join("20/fd/4")).expect("symlink");
        symlink("/dev/null", root.join("20/fd/0")).expect("symlink");
        std::fs::create_dir_all(root.join("21/fd")).expect("fd dir");
        symlink("socket:[501]", root.join("21/fd/3")).expect("symlink");
        symlink("socket:[502]", root.join("21/fd/5")).expect("symlink");

        let expected = vec![
            listener(502, 5432, "0.0.0.0"),
            listener(501, 8000, "127.0.0.1"),
        ];
        // 22 is gone: still complete.
        assert_eq!(listening_in(root, &[20, 21, 22]), (expected.clone(), true));
        // An fd "directory" that cannot be listed makes the answer incomplete.
        write(&root.join("23/fd"), "not a directory");
        assert_eq!(listening_in(root, &[20, 21, 23]), (expected, false));
        // The established connection 503 (local port 8000 to 53924) belongs to 20.
        assert_eq!(
            connections_in(root, &[20, 21]),
            vec![Connection {
                inode: 503,
                local_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                local_port: 8000,
                remote_port: 53924,
            }]
        );
        assert_eq!(connections_in(root, &[21]), vec![]);
    }

    // ---- real processes ----

    /// Kills and reaps the child on every path, so a failed assertion leaves no process behind.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn_sleep() -> KillOnDrop {
        let child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        KillOnDrop(child)
    }

    #[test]
    fn real_child_is_found_by_group_parent_and_threads() {
        let child = spawn_sleep();
        let pid = child.0.id() as i32;

        let members = group_members(pid);
        assert!(
            members.iter().any(|s| s.pid == pid && s.pgrp == pid),
            "{members:?}"
        );
        let children = children_of(std::process::id() as i32);
        assert!(children.iter().any(|s| s.pid == pid), "{children:?}");
        let all = all_processes(&[std::process::id() as i32]);
        assert!(all.iter().any(|s| s.pid == pid));
        assert!(!all.iter().any(|s| s.pid == std::process::id() as i32));

        // Right after exec the child may still be running its startup; poll until it sleeps.
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = threads(pid);
            if found.first().is_some_and(|t| t.state == 'S') || Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].tid, pid);
        assert_eq!(found[0].state, 'S', "{found:?}");
        assert!(describe_threads(pid, &found).starts_with("main thread sleeping"));
    }

    #[test]
    fn real_listener_of_this_process() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("local addr").port();
        let (listeners, complete) = listening(&[std::process::id() as i32]);
        assert!(complete);
        assert!(
            listeners
                .iter()
                .any(|l| l.port == port && l.address == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "port {port} not in {listeners:?}"
        );
    }

    #[test]
    fn real_cpu_time_grows() {
        let pid = [std::process::id() as i32];
        let before = cpu_seconds(&pid);
        // Burn about 50 ms at a time; CPU time is counted in clock ticks, so keep burning (up to
        // a generous bound) until at least one more tick has been charged.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut after = before;
        while after <= before && Instant::now() < deadline {
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            after = cpu_seconds(&pid);
        }
        assert!(after > before, "cpu time did not grow: {before} -> {after}");
    }
}
