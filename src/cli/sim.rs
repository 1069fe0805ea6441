//! `izrelay sim iis` and `izrelay sim dataverse`: the simulators as processes (tests, demos,
//! onboarding rehearsals).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use izrelay::sim::dataverse::{self, Table};
use izrelay::sim::iis::{self, Account, Fault, Latency, Scheduled};
use izrelay::sim::tls::Identity;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SimCommand {
    /// A CDC-WSDL SOAP 1.2 IIS with fault injection.
    Iis(Box<IisArgs>),
    /// A Microsoft Dataverse Web API (OAuth token endpoint, paging, change tracking, upsert,
    /// $batch) with service-protection faults.
    Dataverse(Box<DataverseArgs>),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DataverseArgs {
    /// Address to listen on (port 0 picks a free one; the URL is printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve HTTPS with a generated self-signed certificate.
    #[arg(long)]
    tls: bool,
    /// Write the generated certificate here (PEM), for a client's `ca_file`.
    #[arg(long, value_name = "FILE", requires = "tls")]
    cert_out: Option<PathBuf>,
    /// The tenant in the token endpoint's path.
    #[arg(long, default_value = "sim-tenant")]
    tenant: String,
    /// The application (client) id accepted.
    #[arg(long, default_value = "sim-client")]
    client_id: String,
    /// The client secret accepted.
    #[arg(long, default_value = "sim-secret")]
    client_secret: String,
    /// A table: SET:LOGICAL:PK[:ALTKEY,...][:tracked] (repeatable); a composite alternate key
    /// joins its columns with `+`, e.g. `x_rows:x_row:x_rowid:x_a+x_b,x_c:tracked`.
    #[arg(long, value_name = "SET:LOGICAL:PK[:ALTKEY,...][:tracked]", value_parser = parse_table)]
    table: Vec<Table>,
    /// Seed a table from a JSON array of rows: SET=FILE (repeatable).
    #[arg(long, value_name = "SET=FILE")]
    seed_file: Vec<String>,
    /// Share of Web API calls answered 429 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// The Retry-After of a 429, seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Share of Web API calls answered 503 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Added to every Web API call, ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// An outage in a window after start: KIND@FROM_MS-UNTIL_MS, KIND one of throttle,
    /// unavailable, down (repeatable).
    #[arg(long)]
    schedule: Vec<dataverse::Scheduled>,
    /// Access-token lifetime, seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime_secs: u64,
    /// Delta-token lifetime, seconds (7 days by default).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    delta_token_ttl_secs: u64,
    /// Largest page served.
    #[arg(long, default_value_t = 5000)]
    max_page_size: usize,
    /// Random seed for fault draws, GUIDs and tokens.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Parses `SET:LOGICAL:PK[:ALTKEY,...][:tracked]`.
fn parse_table(s: &str) -> Result<Table, String> {
    let mut parts: Vec<&str> = s.split(':').collect();
    let tracked = parts.last() == Some(&"tracked");
    if tracked {
        parts.pop();
    }
    let (set, logical, pk, keys) = match parts.as_slice() {
        [set, logical, pk] => (*set, *logical, *pk, ""),
        [set, logical, pk, keys] => (*set, *logical, *pk, *keys),
        _ => return Err(format!("{s:?} is not SET:LOGICAL:PK[:ALTKEY,...][:tracked]")),
    };
    if [set, logical, pk].iter().any(|p| p.is_empty()) {
        return Err(format!("{s:?}: SET, LOGICAL and PK must not be empty"));
    }
    let mut table = Table::new(set, logical, pk);
    table.change_tracking = tracked;
    table.alternate_keys = keys
        .split(',')
        .filter(|k| !k.is_empty())
        .map(|k| k.split('+').map(str::to_owned).collect())
        .collect();
    Ok(table)
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
    let args = match cmd {
        SimCommand::Iis(args) => args,
        SimCommand::Dataverse(args) => return run_dataverse(args),
    };
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

fn run_dataverse(args: &DataverseArgs) -> anyhow::Result<ExitCode> {
    for (name, rate) in [("--throttle-rate", args.throttle_rate), ("--error-rate", args.error_rate)]
    {
        if !(0.0..=1.0).contains(&rate) {
            anyhow::bail!("{name} must be between 0 and 1");
        }
    }
    let mut seeds = Vec::new();
    for s in &args.seed_file {
        let (set, file) =
            s.split_once('=').with_context(|| format!("--seed-file {s:?}: expected SET=FILE"))?;
        if !args.table.iter().any(|t| t.entity_set == set) {
            anyhow::bail!("--seed-file {s:?}: no --table declares the entity set {set:?}");
        }
        let path = PathBuf::from(file);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&super::read_text(&path)?)
            .with_context(|| format!("{} is not a JSON array of rows", path.display()))?;
        seeds.push((set.to_owned(), rows));
    }
    let tls = if args.tls {
        let id = Identity::self_signed()?;
        if let Some(out) = &args.cert_out {
            std::fs::write(out, &id.cert_pem)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        Some(id)
    } else {
        None
    };
    let config = dataverse::Config {
        tenant: args.tenant.clone(),
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
        tables: args.table.clone(),
        token_lifetime_secs: args.token_lifetime_secs,
        delta_token_ttl_secs: args.delta_token_ttl_secs,
        max_page_size: args.max_page_size.max(1),
        throttle_rate: args.throttle_rate,
        retry_after_secs: args.retry_after_secs,
        error_rate: args.error_rate,
        latency_ms: args.latency_ms,
        schedule: args.schedule.clone(),
        seed: args.seed,
        tls,
    };
    let rt = super::forward::runtime()?;
    rt.block_on(async {
        let running = dataverse::start(args.listen, config).await?;
        for (set, rows) in seeds {
            for row in rows {
                running.upsert_row(&set, row);
            }
        }
        println!("izrelay sim dataverse listening on {}", running.url);
        std::io::stdout().flush()?;
        let _ = tokio::signal::ctrl_c().await;
        running.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_specs_parse() {
        let t = parse_table("x_rows:x_row:x_rowid").expect("plain");
        assert_eq!(t, Table::new("x_rows", "x_row", "x_rowid"));
        let t = parse_table("x_rows:x_row:x_rowid:x_a+x_b,x_c:tracked").expect("full");
        assert!(t.change_tracking);
        assert_eq!(
            t.alternate_keys,
            vec![vec!["x_a".to_owned(), "x_b".to_owned()], vec!["x_c".to_owned()]]
        );
        let t = parse_table("x_rows:x_row:x_rowid:tracked").expect("tracked");
        assert!(t.change_tracking && t.alternate_keys.is_empty());
        assert!(parse_table("x_rows:x_row").is_err());
        assert!(parse_table("x_rows::x_rowid").is_err());
        assert!(parse_table("a:b:c:d:e").is_err());
    }
}
