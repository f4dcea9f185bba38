//! The `imbang` binary: nginx's command line over the library.
use std::process::ExitCode;

use clap::Parser;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    imbang::process::main(imbang::cli::Cli::parse())
}
