//! The `hookgate` binary: parse the command line and hand over to the
//! library. Everything else lives in `hookgate::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hookgate::cli::run(hookgate::cli::Cli::parse())
}
