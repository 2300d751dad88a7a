//! The `hookgate` binary: parse the command line and hand over to the
//! library. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hookgate::run(hookgate::Cli::parse())
}
