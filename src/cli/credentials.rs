//! `izrelay credentials import|list|remove|rotate-key`: the IIS credentials in the vault.
//!
//! No command prints a password: `list` shows everything else, and errors come from
//! `config::vault` and `store::credentials`, whose texts never carry one. `rotate-key` with a
//! key file is crash-safe: new key to `izrelay.key.new` (fsync), database re-sealed in one
//! transaction, then the rename; `Key::load` finishes a rotation interrupted in between.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use izrelay::config::vault::{self, KEY_ENV, KEY_FILE, Key, NEW_KEY_ENV};
use izrelay::store::format_ms;

use super::Ctx;
use super::store::open;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Import a Settings.xml (userName, password, iisEndpoint, facilityId per providerId);
    /// all or nothing.
    Import(ImportArgs),
    /// The stored endpoints and user names (never a password).
    List(ListArgs),
    /// Delete a provider's endpoint and credentials.
    Remove(RemoveArgs),
    /// Re-seal every password with a new key (IZRELAY_NEW_KEY when the key comes from
    /// IZRELAY_KEY).
    RotateKey,
    /// Seal the Dataverse client secret, read from the first line of standard input or from
    /// IZRELAY_DATAVERSE_SECRET (never from the command line, where `ps` would show it).
    DataverseSecret,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The Settings.xml file.
    file: PathBuf,
    /// Accept a plain http endpoint (no TLS) for this provider; loopback hosts need no opt-in.
    #[arg(long = "allow-http", value_name = "PROVIDER_ID")]
    allow_http: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RemoveArgs {
    /// The provider id (IIS account number).
    provider_id: String,
}

pub(crate) fn run(ctx: &Ctx, cmd: &Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Import(args) => import(ctx, args),
        Command::List(args) => list(ctx, args),
        Command::Remove(args) => remove(ctx, args),
        Command::RotateKey => rotate_key(ctx),
        Command::DataverseSecret => dataverse_secret(ctx),
    }
}

/// The name the Dataverse client secret is stored under.
pub(crate) use izrelay::store::credentials::DATAVERSE_SECRET;

fn dataverse_secret(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let value = match std::env::var("IZRELAY_DATAVERSE_SECRET") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read standard input")?;
            line
        }
    };
    let value = value.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        anyhow::bail!("no secret given: pipe it on standard input or set IZRELAY_DATAVERSE_SECRET");
    }
    let mut store = open(&ctx.data_dir)?;
    let key = Key::load_or_create(&ctx.data_dir)?;
    store.set_secret(DATAVERSE_SECRET, &vault::Secret::new(value), &key)?;
    println!("Dataverse client secret sealed in {}", store.path().display());
    Ok(ExitCode::SUCCESS)
}

fn import(ctx: &Ctx, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let file = args.file.display();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {file}"))?;
    // No lossy decoding here: a replaced byte would silently change a password.
    let xml = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{file} is not UTF-8 text; save it as UTF-8 and retry"))?;
    let settings = vault::read_settings(&xml).with_context(|| file.to_string())?;
    drop(xml);
    let mut store = open(&ctx.data_dir)?;
    let mut created = false;
    let key = match Key::load(&ctx.data_dir) {
        // A first import may create the key (`izrelay init` normally has); with credentials
        // stored, a missing key is lost, and a new one would not open them.
        Err(vault::Error::NoKey { .. }) if store.list_endpoints()?.is_empty() => {
            created = true;
            Key::load_or_create(&ctx.data_dir)?
        }
        other => other?,
    };
    let n = store
        .import_credentials(&settings, &key, &args.allow_http)
        .with_context(|| file.to_string())?;
    let ids: Vec<&str> = settings.iter().map(|s| s.provider_id.as_str()).collect();
    println!("imported {n} credential(s) from {file}: {}", ids.join(", "));
    if created {
        println!(
            "created {} (back it up: the credentials cannot be read without it)",
            ctx.data_dir.join(KEY_FILE).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Ctx, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let rows = open(&ctx.data_dir)?.list_endpoints()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(
            out,
            "no credentials; import them with `izrelay credentials import Settings.xml`"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let url =
                if r.allow_insecure { format!("{} (plain http)", r.url) } else { r.url.clone() };
            let paused = match (r.paused, &r.paused_reason) {
                (false, _) => "no".to_owned(),
                (true, Some(reason)) => format!("PAUSED: {reason}"),
                (true, None) => "PAUSED".to_owned(),
            };
            [
                r.provider_id.clone(),
                url,
                r.facility_id.clone().unwrap_or_else(|| "-".into()),
                r.user_name.clone(),
                format_ms(r.updated_at),
                paused,
            ]
        })
        .collect();
    let header =
        ["PROVIDER", "ENDPOINT", "FACILITY", "USER", "UPDATED", "PAUSED"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &Ctx, args: &RemoveArgs) -> anyhow::Result<ExitCode> {
    if open(&ctx.data_dir)?.remove_endpoint(&args.provider_id)? {
        println!("removed the credentials of provider {}", args.provider_id);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: no credentials for provider {} (see `izrelay credentials list`)",
            args.provider_id
        );
        Ok(ExitCode::from(1))
    }
}

fn rotate_key(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut store = open(&ctx.data_dir)?;
    if Key::from_env(KEY_ENV)?.is_none() {
        let n = store.rotate_key_file().context("the key is unchanged")?;
        println!(
            "re-sealed {n} credential(s) with a new key in {}; back it up again: backups of the \
             old key no longer open the credentials. Restart a running izrelay so it loads the \
             new key",
            ctx.data_dir.join(KEY_FILE).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let new = Key::from_env(NEW_KEY_ENV)?.ok_or(vault::Error::KeyInEnvironment)?;
    let old = Key::load(&ctx.data_dir)?;
    let n = store.rotate_key(&old, &new).context("nothing was re-sealed")?;
    println!(
        "re-sealed {n} credential(s) with {NEW_KEY_ENV}. Now set {KEY_ENV} to that value \
         wherever izrelay runs (e.g. the service's EnvironmentFile), remove {NEW_KEY_ENV}, and \
         restart izrelay: the old key no longer opens the credentials"
    );
    Ok(ExitCode::SUCCESS)
}
