//! The `startgate` binary: parses the command line and hands over to [`startgate::cli::main`],
//! which maps every outcome to the documented exit status.

fn main() -> std::process::ExitCode {
    one_malloc_arena();
    startgate::cli::main()
}

/// glibc gives every thread that allocates its own malloc arena, each with pages of its own:
/// startgate's few threads (the runtime, the file readers, the supervisor's helpers) never
/// contend for the allocator, so one shared arena is as fast and keeps the resident set small
/// (about 0.9 MiB less at a 1000-file start, and some 200 page faults fewer). Called before
/// any thread exists; `MALLOC_ARENA_MAX` in the environment still wins, as glibc documents.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// The C library's `log`, for the bundled SQLite: its FTS5 ranking function (bm25) is the one
/// caller of libm in startgate. Defined here from the pure-Rust `libm` crate, glibc's libm is
/// no longer needed, so it is never loaded: loading it resolves every one of its
/// CPU-dispatched functions, which made some 300 KiB of its code resident on every start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}
