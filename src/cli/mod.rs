//! The command line (clap): one module per subcommand group.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod demo;
mod hl7;

/// izrelay: reports a clinic's vaccinations to the state immunization registries (IIS) as
/// HL7 v2.5.1 VXU messages, store-and-forward.
#[derive(Debug, Parser)]
#[command(name = "izrelay", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole cycle on built-in sample records and show the result (no setup needed).
    Demo(demo::Args),
    /// HL7 tools: generate a VXU, validate messages, parse an ACK (no database).
    #[command(subcommand)]
    Hl7(hl7::Command),
}

/// Runs the parsed command line.
///
/// # Errors
/// Bad input (unreadable file, invalid JSON, unknown field): the caller exits 2.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Hl7(cmd) => hl7::run(cmd),
    }
}

/// Reads a text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // HL7 files in the field are not always UTF-8 (ISO 8859-1 is common): keep what can be read.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Parses an RFC 3339 time given on the command line.
pub(crate) fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// A path argument.
pub(crate) type PathArg = PathBuf;
