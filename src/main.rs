//! The `startgate` binary: parses the command line and hands over to [`startgate::cli::main`],
//! which maps every outcome to the documented exit status.

fn main() -> std::process::ExitCode {
    startgate::cli::main()
}
