//! The `izrelay` binary: parse the command line, set up logging, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_tracing(args.verbose, args.quiet, args.log_format);
    // Before any key or password is read: no core file may ever hold them (SECURITY.md).
    if let Err(e) = izrelay::harden::disable_core_dumps() {
        tracing::warn!(error = %e, "could not disable core dumps; a crash may write secrets to a core file");
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`izrelay log | head`) is the reader's choice, not an error.
            let broken_pipe = err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `-v` adds debug, `-vv` trace, `-q` keeps only errors. `RUST_LOG` wins:
/// a level (`debug`) or targets with levels (`izrelay=debug,reqwest=info`), as
/// `tracing_subscriber::filter::Targets` reads them (no regex, span or field filters: a smaller
/// binary for the daemon). A `RUST_LOG` that does not parse is ignored.
fn init_tracing(verbose: u8, quiet: bool, format: cli::LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(level));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    match format {
        cli::LogFormat::Text => registry.with(layer.with_filter(filter)).init(),
        cli::LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_current_span(false).with_filter(filter))
            .init(),
    }
}
