//! `izrelay run`: the daemon (see `izrelay::daemon`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use izrelay::daemon::{self, Options};

use super::Ctx;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Write the health and metrics address here once listening (for scripts and tests that
    /// use port 0).
    #[arg(long, value_name = "FILE")]
    listen_file: Option<PathBuf>,
}

pub(crate) fn run(
    ctx: Ctx,
    config_path: Option<PathBuf>,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    // Creates the data directory (0700) when missing, like every other command.
    // A damaged file is refused before any loop writes into it.
    drop(super::store::open_checked(&ctx.data_dir)?);
    let reload: daemon::Reload =
        Arc::new(move || super::load_config(config_path.clone()).map_err(|e| format!("{e:#}")));
    let on_listen = args.listen_file.clone().map(|file| {
        Box::new(move |addr: std::net::SocketAddr| {
            if let Err(e) = std::fs::write(&file, addr.to_string()) {
                tracing::error!(file = %file.display(), error = %e, "cannot write the listen file");
            }
        }) as Box<dyn FnOnce(std::net::SocketAddr) + Send>
    });
    let data_dir = ctx.data_dir.clone();
    let rt = super::forward::runtime()?;
    let stopped = rt.block_on(daemon::run(Options {
        data_dir: ctx.data_dir,
        config: ctx.config,
        reload,
        on_listen,
    }))?;
    // Whatever did not stop in time is dropped with the runtime; then nothing may stay in
    // `sending`.
    rt.shutdown_timeout(Duration::from_secs(2));
    if stopped.timed_out {
        let n = daemon::after_stop(&data_dir)?;
        tracing::warn!(rows = n, "messages left in sending went back to queued");
    }
    Ok(ExitCode::SUCCESS)
}
