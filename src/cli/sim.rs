//! `izrelay sim iis`: the simulated IIS as a process (tests, demos, onboarding rehearsals).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use izrelay::sim::iis::{self, Account, Fault, Latency, Scheduled};
use izrelay::sim::tls::Identity;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SimCommand {
    /// A CDC-WSDL SOAP 1.2 IIS with fault injection.
    Iis(Box<IisArgs>),
}

#[derive(Debug, clap::Args)]
pub(crate) struct IisArgs {
    /// Address to listen on (port 0 picks a free one; the URL is printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve HTTPS with a generated self-signed certificate (or --tls-cert/--tls-key).
    #[arg(long)]
    tls: bool,
    /// Write the generated certificate here (PEM), for a client's `ca_file`.
    #[arg(long, value_name = "FILE")]
    cert_out: Option<PathBuf>,
    /// Serve this certificate chain (PEM) instead of a generated one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Accept the accounts of this Settings.xml (the file `credentials import` reads).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Accept this account: USER:PASSWORD[:FACILITY] (repeatable). No account at all accepts any.
    #[arg(long, value_name = "USER:PASSWORD[:FACILITY]")]
    account: Vec<String>,
    /// Share of calls answered with a fault (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Faults --fault-rate draws from, comma-separated (default: every transient one).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Force a fault in a window after start: KIND@FROM_MS-UNTIL_MS (repeatable).
    #[arg(long)]
    schedule: Vec<Scheduled>,
    /// Fixed response time, ms.
    #[arg(long, conflicts_with = "latency_izgw")]
    latency_ms: Option<u64>,
    /// Response times drawn from IZ Gateway's published IIS curve (p50 1.9 s, p99 8.9 s).
    #[arg(long)]
    latency_izgw: bool,
    /// How long a `slow` fault takes to answer, ms.
    #[arg(long, default_value_t = 70_000)]
    slow_ms: u64,
    /// Random seed for fault draws and latency.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Answer AA to any VXU instead of validating it with the CDC rules.
    #[arg(long)]
    no_validate: bool,
    /// Append every call received to this file (NDJSON).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// The endpoint path.
    #[arg(long, default_value = "/iis")]
    path: String,
}

pub(crate) fn run(cmd: &SimCommand) -> anyhow::Result<ExitCode> {
    let SimCommand::Iis(args) = cmd;
    let config = iis_config(args)?;
    let rt = super::forward::runtime()?;
    rt.block_on(async {
        let running = iis::start(args.listen, config).await?;
        println!("izrelay sim iis listening on {}", running.url);
        std::io::stdout().flush()?;
        let _ = tokio::signal::ctrl_c().await;
        running.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn iis_config(args: &IisArgs) -> anyhow::Result<iis::Config> {
    let mut accounts = Vec::new();
    if let Some(path) = &args.settings {
        let text = super::read_text(path)?;
        for s in izrelay::config::vault::read_settings(&text)
            .with_context(|| format!("cannot use {}", path.display()))?
        {
            accounts.push(Account {
                user: s.user_name,
                password: s.password.expose().to_owned(),
                facility: s.facility_id,
            });
        }
    }
    for a in &args.account {
        let mut parts = a.splitn(3, ':');
        let (Some(user), Some(password)) = (parts.next(), parts.next()) else {
            anyhow::bail!(
                "--account {:?}: expected USER:PASSWORD[:FACILITY]",
                a.split(':').next().unwrap_or("")
            );
        };
        accounts.push(Account {
            user: user.to_owned(),
            password: password.to_owned(),
            facility: parts.next().map(str::to_owned),
        });
    }
    if !(0.0..=1.0).contains(&args.fault_rate) {
        anyhow::bail!("--fault-rate must be between 0 and 1");
    }
    let faults = if args.faults.is_empty() {
        Fault::TRANSIENT.to_vec()
    } else {
        args.faults
            .iter()
            .map(|f| Fault::parse(f).with_context(|| format!("unknown fault {f:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(Identity::from_pem(super::read_text(c)?, super::read_text(k)?)),
        _ if args.tls => {
            let id = Identity::self_signed()?;
            if let Some(out) = &args.cert_out {
                std::fs::write(out, &id.cert_pem)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            Some(id)
        }
        _ => None,
    };
    let client_ca = args.client_ca.as_deref().map(super::read_text).transpose()?;
    Ok(iis::Config {
        accounts,
        fault_rate: args.fault_rate,
        faults,
        schedule: args.schedule.clone(),
        latency: match (args.latency_ms, args.latency_izgw) {
            (_, true) => Latency::Izgw,
            (Some(ms), false) => Latency::Fixed(ms),
            (None, false) => Latency::None,
        },
        slow_ms: args.slow_ms,
        seed: args.seed,
        validate: !args.no_validate,
        tls,
        client_ca,
        record: args.record.clone(),
        path: args.path.clone(),
    })
}
