//! `izrelay demo`: the embedded default.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print each VXU in full (the default shows them; `--brief` prints only the summary).
    #[arg(long)]
    brief: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let now = chrono::Local::now().fixed_offset();
    let mut out = std::io::stdout().lock();
    let summary = izrelay::demo::run(&mut out, now, !args.brief)?;
    Ok(if summary.as_expected() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
