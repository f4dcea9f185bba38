//! The `imbang` binary: nginx's command line over the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    imbang::process::main(imbang::cli::Cli::parse())
}
