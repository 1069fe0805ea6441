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

/// Logs go to stderr; `-v` adds debug, `-vv` trace, `-q` keeps only errors. `RUST_LOG` wins.
fn init_tracing(verbose: u8, quiet: bool, format: cli::LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}
