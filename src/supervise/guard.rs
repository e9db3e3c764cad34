//! The guard: startgate itself in a hidden mode (`startgate __guard PARENT -- PROGRAM ARG...`),
//! standing between startgate and a migrate command so that the command's whole process group
//! dies with startgate, even when startgate is killed with SIGKILL (DESIGN.md "Existing
//! migration tools").
//!
//! A parent-death signal reaches only the direct child of the process that died, never its
//! grandchildren: `sh -c 'alembic upgrade head'` would lose its shell and leave Python running.
//! So startgate starts the guard as the leader of a new process group, and the guard:
//! - asks the kernel for SIGUSR1 when startgate dies (`PR_SET_PDEATHSIG`), and answers it by
//!   sending SIGKILL to its whole group, itself included: the command, and everything the
//!   command started that stayed in the group, is gone at once;
//! - checks that startgate is still its parent after asking (startgate may have died first);
//! - starts the command in its own group and waits for it, surviving the SIGTERM that
//!   startgate sends the group on a timeout (a handler that does nothing; handlers, unlike
//!   ignored signals, are reset for the command by `exec`), so that the command's status still
//!   reaches startgate;
//! - exits with the command's status, or 128+N when a signal N ended it, as a shell does.
//!
//! The guard is synchronous and tiny: no runtime, no settings, no logging; it writes only when
//! it cannot start the command (to stderr, which startgate keeps for the message).

use std::ffi::OsString;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__guard";

/// The signal the kernel sends the guard when startgate dies.
const PARENT_DIED: libc::c_int = libc::SIGUSR1;

/// What the guard exits with when it cannot start the command at all.
const CANNOT_START: u8 = 127;

extern "C" fn kill_group(_: libc::c_int) {
    // SAFETY: kill is async-signal-safe; pid 0 is the caller's own process group.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// Installs `handler` for `signal`; false if the kernel refused.
fn handle(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) -> bool {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask is a valid argument;
    // both handlers only call async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
    }
}

/// The arguments after `__guard`: the parent's pid, `--`, the program and its arguments.
#[derive(Debug, PartialEq, Eq)]
struct Arguments {
    parent: libc::pid_t,
    program: OsString,
    args: Vec<OsString>,
}

fn parse(args: &[OsString]) -> Option<Arguments> {
    let (parent, rest) = args.split_first()?;
    // startgate may be PID 1 (a container's entrypoint, an init container).
    let parent = parent.to_str()?.parse().ok().filter(|p| *p > 0)?;
    let (dash, rest) = rest.split_first()?;
    if dash != "--" {
        return None;
    }
    let (program, args) = rest.split_first()?;
    Some(Arguments {
        parent,
        program: program.clone(),
        args: args.to_vec(),
    })
}

/// Runs the guard with the arguments after the subcommand; returns its exit status.
pub fn main(args: &[OsString]) -> u8 {
    let Some(arguments) = parse(args) else {
        eprintln!(
            "startgate {SUBCOMMAND}: usage: startgate {SUBCOMMAND} PARENT_PID -- PROGRAM [ARG...]"
        );
        return crate::exit::code::USAGE;
    };
    if !handle(PARENT_DIED, kill_group)
        || !handle(libc::SIGTERM, ignore)
        || !handle(libc::SIGINT, ignore)
        || !handle(libc::SIGHUP, ignore)
    {
        eprintln!("startgate {SUBCOMMAND}: cannot install signal handlers");
        return CANNOT_START;
    }
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED, 0, 0, 0);
    }
    // startgate died before the request took effect: the signal will never come.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != arguments.parent {
        return CANNOT_START;
    }
    let child = std::process::Command::new(&arguments.program)
        .args(&arguments.args)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "startgate {SUBCOMMAND}: cannot start {}: {e}",
                arguments.program.to_string_lossy()
            );
            return CANNOT_START;
        }
    };
    match child.wait() {
        Ok(status) => crate::supervise::process::status_code(status),
        Err(e) => {
            eprintln!("startgate {SUBCOMMAND}: waiting for the command failed: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_its_arguments() {
        assert_eq!(
            parse(&args(&["42", "--", "sh", "-c", "alembic upgrade head"])),
            Some(Arguments {
                parent: 42,
                program: "sh".into(),
                args: args(&["-c", "alembic upgrade head"]),
            })
        );
        for bad in [
            &[][..],
            &["42"][..],
            &["42", "sh"][..],
            &["42", "--"][..],
            &["x", "--", "sh"][..],
            &["0", "--", "sh"][..],
            &["-5", "--", "sh"][..],
        ] {
            assert_eq!(parse(&args(bad)), None, "{bad:?}");
        }
    }
}
