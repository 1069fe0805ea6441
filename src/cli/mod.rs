//! The command line (clap): one module per subcommand group.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod credentials;
mod daemon;
#[cfg(feature = "simulators")]
mod demo;
mod docs;
mod forward;
mod hl7;
mod pull;
mod setup;
#[cfg(feature = "simulators")]
mod sim;
mod store;

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
    /// Log lines as human-readable text (default) or JSON, one object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The configuration file (default: config.toml in the platform's config directory).
    #[arg(long, global = true, env = "IZRELAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where the database and key live (default: the config's data_dir, else the platform's
    /// data directory).
    #[arg(long, global = true, env = "IZRELAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole cycle on built-in sample records and show the result (no setup needed).
    #[cfg(feature = "simulators")]
    Demo(demo::Args),
    /// The daemon: pull, forward and sync loops until SIGTERM/SIGINT; SIGHUP reloads the config.
    Run(daemon::RunArgs),
    /// HL7 tools: generate a VXU, validate messages, parse an ACK (no database).
    #[command(subcommand)]
    Hl7(hl7::Command),
    /// Write a commented config file and create the data directory and key file.
    Init(setup::InitArgs),
    /// Check the configuration file; exit 1 listing every problem.
    CheckConfig,
    /// Read records (JSON array or NDJSON) into the outbox.
    Import(store::ImportArgs),
    /// Every message for a vaccination, with attempts and responses.
    History(store::HistoryArgs),
    /// Notification log rows, newest first, filtered.
    Log(store::LogArgs),
    /// One message segment by segment with field names, and its ACK explained.
    Show(store::ShowArgs),
    /// Per provider: counts by state, oldest queued, last accepted, paused.
    Status(store::StatusArgs),
    /// Generate a new message for a stored record (after fixing it).
    Regenerate(store::RegenerateArgs),
    /// Drop message bodies that are accepted and synced, older than N days.
    Purge(store::PurgeArgs),
    /// IIS credentials: import a Settings.xml, list, remove, rotate the key.
    #[command(subcommand)]
    Credentials(credentials::Command),
    /// Read the Dataverse vaccination table into the outbox (one pass).
    Pull(pull::PullArgs),
    /// Write outcomes back to Dataverse (one round).
    Sync(pull::SyncArgs),
    /// Dataverse tools: `probe` checks the mapping against the environment.
    #[command(subcommand)]
    Dataverse(pull::DataverseCommand),
    /// Send queued messages to each IIS (SOAP submitSingleMessage).
    Forward(forward::ForwardArgs),
    /// Talk to an IIS directly: `ping` (connectivityTest).
    #[command(subcommand)]
    Iis(forward::IisCommand),
    /// Simulated remote systems on loopback, for tests and rehearsals.
    #[command(subcommand)]
    #[cfg(feature = "simulators")]
    Sim(sim::SimCommand),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(docs::CompletionsArgs),
    /// Print the man page izrelay(1) in roff, or write every page with --dir.
    Man(docs::ManArgs),
}

/// Runs the parsed command line.
///
/// # Errors
/// Bad input (unreadable file, invalid JSON, unknown field): the caller exits 2.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        #[cfg(feature = "simulators")]
        Command::Demo(args) => demo::run(&args, cli.data_dir),
        Command::Run(args) => {
            let ctx = Ctx::load(cli.config.clone(), cli.data_dir)?;
            daemon::run(ctx, cli.config, &args)
        }
        Command::Hl7(cmd) => hl7::run(cmd),
        Command::Init(args) => setup::init(cli.config, cli.data_dir, &args),
        Command::CheckConfig => setup::check_config(cli.config),
        Command::Import(args) => store::import(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::History(args) => store::history(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Log(args) => store::log(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Show(args) => store::show(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Status(args) => store::status(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Regenerate(args) => {
            store::regenerate(&Ctx::load(cli.config, cli.data_dir)?, &args)
        }
        Command::Purge(args) => store::purge(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Credentials(cmd) => credentials::run(&Ctx::load(cli.config, cli.data_dir)?, &cmd),
        Command::Dataverse(cmd) => pull::dataverse(&Ctx::load(cli.config, cli.data_dir)?, &cmd),
        Command::Sync(args) => pull::sync(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Pull(args) => pull::pull(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Forward(args) => forward::forward(&Ctx::load(cli.config, cli.data_dir)?, &args),
        Command::Iis(cmd) => forward::iis(&Ctx::load(cli.config, cli.data_dir)?, &cmd),
        #[cfg(feature = "simulators")]
        Command::Sim(cmd) => sim::run(&cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
    }
}

/// What the store commands need: the validated config and the data directory.
pub(crate) struct Ctx {
    pub config: izrelay::config::Config,
    pub data_dir: PathBuf,
}

impl Ctx {
    fn load(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let config = load_config(config)?;
        let data_dir = match data_dir.or_else(|| config.data_dir.clone()) {
            Some(d) => d,
            None => directories::ProjectDirs::from("org", "izrelay", "izrelay")
                .map(|p| p.data_dir().to_path_buf())
                .context("no home directory to put the data in: pass --data-dir")?,
        };
        Ok(Self { config, data_dir })
    }
}

/// Loads `--config` (which must exist) or the default file (which may be absent).
pub(crate) fn load_config(given: Option<PathBuf>) -> anyhow::Result<izrelay::config::Config> {
    Ok(match given {
        Some(path) => izrelay::config::load(&path, true)?,
        None => match izrelay::config::default_path() {
            Some(path) => izrelay::config::load(&path, false)?,
            None => izrelay::config::Config::default(),
        },
    })
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
