//! The `hookgate` binary: parse the command line and hand over to the
//! library. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the C library's malloc: fewer cycles per request
/// (hyper, rustls and hookgate allocate and free small buffers on every
/// request) and less memory held per connection; `benches/RESULTS.md`,
/// twelfth round. `--no-default-features` builds with the system allocator.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    hookgate::run(hookgate::Cli::parse())
}
