//! The configuration file: raw TOML → a validated [`Config`], every problem reported at once.
//!
//! Found at `--config` / `IZRELAY_CONFIG`, else `config.toml` in the platform's config
//! directory; a missing default file means "all defaults". Unknown keys are errors (a typo
//! must not silently change what is sent to a state). The message profile is layered: the
//! top-level `[message]` table is every provider's default, and `[provider.<id>.message]`
//! overrides it key by key for that provider's IIS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::forwarder::{ForwardConfig, ForwardSettings};
use crate::hl7::{Hd, MessageProfile, Profiles};

pub mod vault;

/// A commented configuration, as `izrelay init` writes it.
pub const EXAMPLE: &str = include_str!("../../packaging/config.example.toml");

/// Why the configuration cannot be used: every problem, each with its key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems.
    #[error("{path} has {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem, starting with its key.
        problems: Vec<String>,
    },
}

/// The validated configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where the database and key live; `--data-dir` wins.
    pub data_dir: Option<PathBuf>,
    /// The message profile per provider.
    pub profiles: Profiles,
    /// How to reach each IIS (timeouts, retries, TLS) per provider.
    pub forward: ForwardConfig,
    /// The Dataverse environment and mapping, when configured.
    pub dataverse: Option<crate::pull::dataverse::DataverseConfig>,
    /// `izrelay run`: loop intervals, alerts, stop bound, health and metrics.
    pub daemon: crate::daemon::DaemonSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// Where the database and key file live.
    #[serde(default)]
    data_dir: Option<PathBuf>,
    /// Default message profile (MessageProfile keys).
    #[serde(default)]
    message: Option<toml::Table>,
    /// Default forwarding settings (ForwardSettings keys).
    #[serde(default)]
    forward: Option<toml::Table>,
    /// Per-provider settings, keyed by provider id (IIS account number).
    #[serde(default)]
    provider: BTreeMap<String, RawProvider>,
    /// The Dataverse environment and mapping.
    #[serde(default)]
    dataverse: Option<toml::Table>,
    /// The daemon (`izrelay run`).
    #[serde(default)]
    daemon: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    /// Message profile overrides for this provider's IIS.
    #[serde(default)]
    message: Option<toml::Table>,
    /// Forwarding overrides for this provider's IIS.
    #[serde(default)]
    forward: Option<toml::Table>,
}

/// The default config file location.
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "izrelay", "izrelay")
        .map(|p| p.config_dir().join("config.toml"))
}

/// Loads `path`; when `required` is false a missing file gives the defaults.
///
/// # Errors
/// [`Error::Read`] or [`Error::Invalid`] listing every problem.
pub fn load(path: &Path, required: bool) -> Result<Config, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(source) => Err(Error::Read { path: path.to_path_buf(), source }),
    }
}

/// Parses and validates configuration text (`path` is for messages).
///
/// # Errors
/// [`Error::Invalid`] listing every problem found.
pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
    let invalid = |problems| Error::Invalid { path: path.to_path_buf(), problems };
    let raw: Raw =
        toml::from_str(text).map_err(|e| invalid(vec![e.to_string().trim().replace('\n', " ")]))?;
    let mut problems = Vec::new();
    let base = raw.message.unwrap_or_default();
    let default = profile_from(&base, "message", &mut problems);
    let forward_base = raw.forward.unwrap_or_default();
    let forward_default = forward_from(&forward_base, "forward", &mut problems);
    let mut forward_by_provider = BTreeMap::new();
    let mut by_provider = BTreeMap::new();
    for (id, p) in raw.provider {
        if let Some(overrides) = p.forward {
            let mut merged = forward_base.clone();
            merged.extend(overrides);
            if let Some(s) = forward_from(&merged, &format!("provider.{id}.forward"), &mut problems)
            {
                forward_by_provider.insert(id.clone(), s);
            }
        }
        if id.trim().is_empty() {
            problems.push("provider: a provider id cannot be empty".to_owned());
        }
        if let Some(overrides) = p.message {
            let mut merged = base.clone();
            merged.extend(overrides);
            if let Some(profile) =
                profile_from(&merged, &format!("provider.{id}.message"), &mut problems)
            {
                by_provider.insert(id, profile);
            }
        }
    }
    let dataverse = raw.dataverse.as_ref().and_then(|t| {
        // Not key by key: `vaccination` is required, so a key alone would always fail.
        let d: crate::pull::dataverse::DataverseConfig = match toml::Value::Table(t.clone())
            .try_into()
        {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("dataverse: {}", e.to_string().trim().replace('\n', " ")));
                return None;
            }
        };
        let found = d.problems("dataverse");
        let ok = found.is_empty();
        problems.extend(found);
        ok.then_some(d)
    });
    let daemon = raw.daemon.as_ref().and_then(|t| {
        let d: crate::daemon::DaemonSettings = table_into(t, "daemon", &mut problems)?;
        let found = d.problems("daemon");
        let ok = found.is_empty();
        problems.extend(found);
        ok.then_some(d)
    });
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok(Config {
        dataverse,
        daemon: daemon.unwrap_or_default(),
        data_dir: raw.data_dir,
        profiles: Profiles { default: default.unwrap_or_default(), by_provider },
        forward: ForwardConfig {
            default: forward_default.unwrap_or_default(),
            by_provider: forward_by_provider,
        },
    })
}

/// Deserializes a table into `T`, reporting every bad key (serde stops at the first one, so
/// on failure each key is tried alone).
fn table_into<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    match toml::Value::Table(table.clone()).try_into() {
        Ok(v) => Some(v),
        Err(first) => {
            let before = problems.len();
            for (name, value) in table {
                let single: toml::Table = std::iter::once((name.clone(), value.clone())).collect();
                if let Err(e) = toml::Value::Table(single).try_into::<T>() {
                    let text = e.to_string();
                    problems.push(format!("{key}.{name}: {}", text.trim().replace('\n', " ")));
                }
            }
            if problems.len() == before {
                problems.push(format!("{key}: {}", first.to_string().trim().replace('\n', " ")));
            }
            None
        }
    }
}

fn forward_from(
    table: &toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<ForwardSettings> {
    let settings: ForwardSettings = table_into(table, key, problems)?;
    let found = settings.problems(key);
    let ok = found.is_empty();
    problems.extend(found);
    ok.then_some(settings)
}

fn profile_from(
    table: &toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<MessageProfile> {
    let profile: MessageProfile = table_into(table, key, problems)?;
    let hds = [
        ("sending_application", &profile.sending_application),
        ("sending_facility", &profile.sending_facility),
        ("receiving_application", &profile.receiving_application),
        ("receiving_facility", &profile.receiving_facility),
        ("patient_id_authority", &profile.patient_id_authority),
        ("provider_id_authority", &profile.provider_id_authority),
    ];
    let before = problems.len();
    for (name, hd) in hds {
        check_hd(&format!("{key}.{name}"), hd, problems);
    }
    for code in profile.local_eligibility_codes.iter().chain(&profile.local_funding_codes) {
        if code.code.trim().is_empty() || code.system.trim().is_empty() {
            problems.push(format!("{key}: local code {:?} needs a code and a system", code.code));
        }
    }
    (problems.len() == before).then_some(profile)
}

fn check_hd(key: &str, hd: &Hd, problems: &mut Vec<String>) {
    if hd.namespace.chars().count() > 20 {
        problems.push(format!(
            "{key}.namespace: {:?} is longer than 20 characters (HD.1)",
            hd.namespace
        ));
    }
    let oid_ok = hd.oid.is_empty()
        || (hd.oid.split('.').count() > 1
            && hd.oid.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
    if !oid_ok {
        problems
            .push(format!("{key}.oid: {:?} is not an ISO OID (digits separated by dots)", hd.oid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid() {
        let c = parse(Path::new("example"), EXAMPLE).map_err(|e| e.to_string());
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn provider_overrides_are_layered_on_the_default() -> Result<(), Error> {
        let c = parse(
            Path::new("t"),
            r#"
            [message]
            processing_id = "T"
            sending_application = { namespace = "EHR" }
            [provider.PRV-9.message]
            receiving_facility = { namespace = "WAIIS" }
            "#,
        )?;
        let p = c.profiles.get(Some("PRV-9"));
        assert_eq!(p.receiving_facility.namespace, "WAIIS");
        assert_eq!(p.sending_application.namespace, "EHR");
        assert_eq!(c.profiles.get(Some("other")).receiving_facility.namespace, "");
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let e = parse(
            Path::new("t"),
            r#"
            [message]
            sending_facility = { namespace = "A", oid = "2.16.x" }
            [provider.A.message]
            processing_id = "X"
            [provider.B.message]
            sendd_pd1 = true
            ndc = "sideways"
            "#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("message.sending_facility.oid"), "{e}");
        assert!(e.contains("provider.A.message"), "{e}");
        assert!(e.contains("provider.B.message.sendd_pd1"), "{e}");
        assert!(e.contains("provider.B.message.ndc"), "both bad keys of one table: {e}");
        let unknown =
            parse(Path::new("t"), "data_dri = 1").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(unknown.contains("data_dri"), "{unknown}");
    }
}
