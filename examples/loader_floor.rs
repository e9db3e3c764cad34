//! What reading a migration directory costs, against the floor under any implementation: the
//! figures behind the README's account of the no-op re-run at N=1000 ("Benchmarks").
//!
//! ```text
//! loader_floor DIR [LOADS]
//! ```
//!
//! For the `*.sql` files of `DIR` (for example the 1000 files `bench/apply.py --keep-files`
//! leaves), `LOADS` times over (default 100), it measures, per pass over the directory:
//!
//! - `load_dir`: startgate's own loader (listing, reading on up to 4 threads, UTF-8 check,
//!   directives, SHA-256), as every start runs it;
//! - `list`: listing the directory (`fs::read_dir`, every entry's name);
//! - `open+close`: opening each file by name relative to the directory and closing it;
//! - `open+read+close`, on one thread and on two: the same with the file read to its end,
//!   nothing else done with the bytes;
//! - `sha256`: hashing every file's bytes, already in memory.
//!
//! Each line gives the median wall time and the median CPU time of the whole process (every
//! thread, user and system) per pass. Run it on an otherwise idle machine. Bad arguments print
//! a message and exit with status 2; a directory that cannot be read exits with status 1.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), loads, None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: loader_floor DIR [LOADS]");
        return ExitCode::from(2);
    };
    let loads = match loads.map(|l| l.to_string_lossy().parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("loader_floor: LOADS must be a whole number above 0");
            return ExitCode::from(2);
        }
    };
    match run(Path::new(&dir), loads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loader_floor: {e}");
            ExitCode::from(1)
        }
    }
}

/// Measures and prints; an error names the directory or file at fault.
fn run(dir: &Path, loads: usize) -> Result<(), String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let path = entry.map_err(at(dir))?.path();
        if path.extension().is_some_and(|e| e == "sql")
            && let Some(name) = path.file_name()
        {
            // A file name from the directory holds no NUL byte.
            if let Ok(name) = CString::new(name.as_bytes()) {
                names.push(name);
            }
        }
    }
    names.sort();
    let dir_file = fs::File::open(dir).map_err(at(dir))?;
    let mut contents = Vec::with_capacity(names.len());
    for name in &names {
        let path = dir.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        contents.push(fs::read(&path).map_err(at(&path))?);
    }
    let bytes: usize = contents.iter().map(Vec::len).sum();
    println!(
        "{} files, {:.1} KiB, {loads} passes each",
        names.len(),
        bytes as f64 / 1024.0
    );

    let dir_path: PathBuf = dir.to_path_buf();
    measure("load_dir", loads, || {
        // The files were all read above: a failure now is the directory changing under us.
        if let Err(e) = startgate::migrate::source::load_dir(&dir_path) {
            eprintln!("loader_floor: load_dir failed: {e}");
        }
    });
    let fd = dir_file.as_raw_fd();
    measure("list", loads, || {
        if let Ok(entries) = fs::read_dir(&dir_path) {
            std::hint::black_box(entries.filter_map(Result::ok).count());
        }
    });
    measure("open+close", loads, || {
        for name in &names {
            // SAFETY: `fd` is an open directory and `name` a NUL-terminated string, both alive
            // for the call; the descriptor returned is closed right away.
            unsafe {
                let f = libc::openat(fd, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if f >= 0 {
                    libc::close(f);
                }
            }
        }
    });
    measure("open+read+close, 1 thread", loads, || read_all(fd, &names));
    measure("open+read+close, 2 threads", loads, || {
        let (a, b) = names.split_at(names.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| read_all(fd, b));
            read_all(fd, a);
        });
    });
    measure("sha256", loads, || {
        for c in &contents {
            std::hint::black_box(Sha256::digest(c));
        }
    });
    Ok(())
}

/// Opens, reads to the end and closes each file, into one reused buffer.
fn read_all(fd: i32, names: &[CString]) {
    let mut buffer = vec![0u8; 64 * 1024];
    for name in names {
        // SAFETY: as in `open+close`; `buffer` is valid for writes of its length.
        unsafe {
            let f = libc::openat(fd, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if f < 0 {
                continue;
            }
            while libc::read(f, buffer.as_mut_ptr().cast(), buffer.len()) > 0 {}
            libc::close(f);
        }
    }
}

/// Turns an I/O error into a message naming `path`.
fn at(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Runs `pass` `loads` times and prints the median wall and process CPU time per pass.
fn measure(what: &str, loads: usize, mut pass: impl FnMut()) {
    pass(); // warm the caches
    let (mut wall, mut cpu) = (Vec::with_capacity(loads), Vec::with_capacity(loads));
    for _ in 0..loads {
        let (t, c) = (Instant::now(), process_cpu());
        pass();
        wall.push(t.elapsed());
        cpu.push(process_cpu().saturating_sub(c));
    }
    println!(
        "{what:<28} wall {:>6.2} ms   cpu {:>6.2} ms",
        median_ms(&mut wall),
        median_ms(&mut cpu)
    );
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// CPU time of the whole process so far, every thread, user and system.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
