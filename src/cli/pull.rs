//! `izrelay pull`: one pass over the Dataverse vaccination table into the outbox.

use std::process::ExitCode;

use anyhow::Context;
use izrelay::config::vault::Key;
use izrelay::pull::dataverse::{Client, DataverseConfig, pull as dv_pull};
use izrelay::store::Store;

use super::Ctx;
use super::credentials::DATAVERSE_SECRET;
use super::store::open;

#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// One pass, then exit (what `pull` always does; the periodic loop is `izrelay run`).
    #[arg(long)]
    once: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The Dataverse settings, the database and a client signed in with the sealed secret.
fn connect(ctx: &Ctx) -> anyhow::Result<(&DataverseConfig, Store, Client)> {
    let dv = ctx
        .config
        .dataverse
        .as_ref()
        .filter(|d| d.enabled())
        .context("Dataverse is not configured: set [dataverse] url, tenant_id and client_id")?;
    let store = open(&ctx.data_dir)?;
    let key = Key::load(&ctx.data_dir)?;
    let secret = store.secret(DATAVERSE_SECRET, &key)?.context(
        "no Dataverse client secret: pipe it into `izrelay credentials dataverse-secret`",
    )?;
    let client = Client::new(dv.settings(), secret)?;
    Ok((dv, store, client))
}

pub(crate) fn pull(ctx: &Ctx, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let _ = args.once;
    let (dv, mut store, client) = connect(ctx)?;
    let now = chrono::Local::now().fixed_offset();
    let report = super::forward::runtime()?.block_on(dv_pull::pull(
        &client,
        &dv.vaccination,
        &mut store,
        &ctx.config.profiles,
        now,
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let c = &report.intake;
        println!(
            "pulled ({}) {} rows in {} pages: {} new, {} changed, {} unchanged, {} not completed; \
             {} messages queued, {} invalid, {} rows not mappable",
            report.mode,
            report.rows,
            report.pages,
            c.new,
            c.changed,
            c.unchanged,
            c.not_completed,
            c.queued,
            c.invalid,
            report.unmappable
        );
    }
    Ok(if report.unmappable > 0 || report.intake.invalid > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DataverseCommand {
    /// Check the mapping against the environment's metadata; exit 1 naming every missing
    /// table or column.
    Probe {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn dataverse(ctx: &Ctx, cmd: &DataverseCommand) -> anyhow::Result<ExitCode> {
    let DataverseCommand::Probe { json } = cmd;
    let (dv, _store, client) = connect(ctx)?;
    let report = super::forward::runtime()?
        .block_on(izrelay::pull::dataverse::probe::probe(&client, &dv.vaccination))?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("problem: {p}");
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        println!("{} column(s) found, {} problem(s)", report.found, report.problems.len());
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// One round, then exit (what `sync` always does; the periodic loop is `izrelay run`).
    #[arg(long)]
    once: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn sync(ctx: &Ctx, args: &SyncArgs) -> anyhow::Result<ExitCode> {
    let _ = args.once;
    let (dv, mut store, client) = connect(ctx)?;
    let report =
        super::forward::runtime()?.block_on(izrelay::sync::sync_once(&client, dv, &mut store))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "synced {} outcome(s), {} failed (will retry), {} conflict(s) resolved, {} waiting{}",
            report.synced,
            report.failed,
            report.conflicts,
            report.backlog,
            report.last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
        );
    }
    Ok(if report.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
