//! `izrelay demo`: the embedded default.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print only the summary lines, not each VXU.
    #[arg(long)]
    brief: bool,
}

/// Runs the demo in `data_dir`, or in a temporary directory removed afterwards.
pub(crate) fn run(args: &Args, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut store = super::store::open(&dir)?;
    let now = chrono::Local::now().fixed_offset();
    let mut out = std::io::stdout().lock();
    let summary = izrelay::demo::run(&mut out, &mut store, now, !args.brief)?;
    Ok(if summary.as_expected() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
