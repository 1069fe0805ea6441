//! `izrelay forward` and `izrelay iis ping`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use izrelay::config::vault::Key;
use izrelay::forwarder::{DrainOptions, drain};
use izrelay::iis::client::Client;
use izrelay::iis::soap::{self, Response};

use super::Ctx;
use super::store::open;

#[derive(Debug, clap::Args)]
pub(crate) struct ForwardArgs {
    /// Drain what is due, then exit (without it: keep forwarding until Ctrl-C / SIGTERM).
    #[arg(long)]
    once: bool,
    /// Only this provider's IIS (repeatable).
    #[arg(long = "provider", value_name = "PROVIDER_ID")]
    providers: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A multi-threaded runtime for the network commands.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("izrelay-net")
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn forward(ctx: &Ctx, args: &ForwardArgs) -> anyhow::Result<ExitCode> {
    let store = open(&ctx.data_dir)?;
    let key = Key::load(&ctx.data_dir)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages {per_sec} {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (inc_bar, len_bar) = (bar.clone(), bar.clone());
    let progress: izrelay::forwarder::drain::Progress = Arc::new(move || inc_bar.inc(1));
    let total: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| len_bar.set_length(n));
    let options =
        DrainOptions { once: args.once, providers: args.providers.clone(), observer: None };
    let rt = runtime()?;
    let (report, store) = rt.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: in-flight messages finish, claimed ones go back to queued");
            let _ = stop.send(true);
            // Keep the sender alive so receivers see the value, not a closed channel.
            std::future::pending::<()>().await;
        });
        let (store, report) =
            drain(store, &key, &ctx.config.forward, &options, Some((progress, total)), stopped)
                .await?;
        anyhow::Ok((report, store))
    })?;
    bar.finish_and_clear();
    drop(store);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if report.recovered > 0 {
            println!(
                "requeued {} message(s) left in sending by an interrupted run",
                report.recovered
            );
        }
        for p in &report.providers {
            let mut line = format!(
                "{}: {} accepted ({} with warnings), {} rejected, {} retried, {} failed",
                p.provider_id, p.accepted, p.warnings, p.rejected, p.retried, p.failed
            );
            if let Some(r) = &p.paused {
                line.push_str(&format!("; PAUSED: {r} (import its credentials again to resume)"));
            }
            if p.circuit_open {
                line.push_str("; circuit open: the IIS does not answer");
                if let Some(r) = &p.circuit_reason {
                    line.push_str(&format!(" ({r})"));
                }
                line.push_str(", messages stay queued");
            }
            if let Some(e) = &p.error {
                line.push_str(&format!("; cannot connect: {e}"));
            }
            println!("{line}");
        }
        for (provider, n) in &report.without_endpoint {
            let who = if provider.is_empty() { "(no provider id)" } else { provider };
            println!(
                "{who}: {n} queued message(s) but no IIS credentials (izrelay credentials import)"
            );
        }
        if report.providers.is_empty() && report.without_endpoint.is_empty() {
            println!("nothing to forward");
        }
    }
    if report.store_failed {
        eprintln!(
            "the database failed during the drain (see the errors above); messages left in \
             sending go back to queued at the next run"
        );
    }
    let trouble = report.store_failed
        || report
            .providers
            .iter()
            .any(|p| p.paused.is_some() || p.error.is_some() || p.circuit_open);
    Ok(if trouble { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum IisCommand {
    /// Call the IIS's connectivityTest for a provider and show the answer.
    Ping {
        /// The provider id (IIS account number).
        provider_id: String,
    },
}

pub(crate) fn iis(ctx: &Ctx, cmd: &IisCommand) -> anyhow::Result<ExitCode> {
    let IisCommand::Ping { provider_id } = cmd;
    let store = open(&ctx.data_dir)?;
    let key = Key::load(&ctx.data_dir)?;
    let endpoint = store
        .endpoint(provider_id, &key)?
        .with_context(|| format!("no IIS credentials for provider {provider_id}"))?;
    let client = Client::new(&endpoint, ctx.config.forward.get(provider_id))?;
    let echo = format!("izrelay ping {}", izrelay::store::now_ms());
    let reply = runtime()?.block_on(client.ping(&echo));
    let status =
        reply.http_status.map_or_else(|| "no HTTP answer".to_owned(), |s| format!("HTTP {s}"));
    match reply.body.as_deref().map(soap::parse_response) {
        Ok(Ok(Response::Connectivity(text))) => {
            let echoed = text.contains(&echo);
            println!("{}: {status} in {} ms: {text:?}", endpoint.url, reply.duration_ms);
            if !echoed {
                println!("warning: the answer does not contain the text sent ({echo:?})");
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(Response::Fault(f))) => {
            println!(
                "{}: {status}: SOAP fault {:?} {}: {}",
                endpoint.url,
                f.kind,
                f.code.unwrap_or(0),
                f.detail.trim()
            );
            Ok(ExitCode::from(1))
        }
        Ok(Ok(other)) => {
            println!("{}: {status}: unexpected answer {other:?}", endpoint.url);
            Ok(ExitCode::from(1))
        }
        Ok(Err(e)) => {
            println!("{}: {status}: not a SOAP answer: {e}", endpoint.url);
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("{}: {}: {}", endpoint.url, e.kind.word(), e.message);
            Ok(ExitCode::from(1))
        }
    }
}
