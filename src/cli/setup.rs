//! `izrelay init` and `izrelay check-config`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Overwrite an existing config file.
    #[arg(long)]
    force: bool,
}

/// Creates `path` 0600 with `contents`, failing if it exists.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}

pub(crate) fn init(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    args: &InitArgs,
) -> anyhow::Result<ExitCode> {
    let config_path = config
        .or_else(izrelay::config::default_path)
        .context("no config directory: pass --config")?;
    if let Some(dir) = config_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if config_path.exists() && !args.force {
        println!("{} exists; keeping it (--force to overwrite)", config_path.display());
    } else {
        if args.force {
            let _ = std::fs::remove_file(&config_path);
        }
        write_private(&config_path, izrelay::config::EXAMPLE.as_bytes())
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        println!("wrote {}", config_path.display());
    }
    let config = izrelay::config::load(&config_path, true)?;
    let data_dir = data_dir
        .or(config.data_dir)
        .or_else(|| {
            directories::ProjectDirs::from("org", "izrelay", "izrelay")
                .map(|p| p.data_dir().to_path_buf())
        })
        .context("no data directory: pass --data-dir")?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", data_dir.display()))?;
    }
    let key_path = data_dir.join(izrelay::config::vault::KEY_FILE);
    if key_path.exists() {
        println!("{} exists; keeping it", key_path.display());
    } else {
        izrelay::config::vault::Key::load_or_create(&data_dir)?;
        println!(
            "created {} (keep it: credentials sealed with it cannot be read without it)",
            key_path.display()
        );
    }
    let store = super::store::open(&data_dir)?;
    store.audit_event("init", Some(&data_dir.display().to_string()), None)?;
    println!("database {} ready", store.path().display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check_config(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match super::load_config(config) {
        Ok(c) => {
            println!("configuration ok: {} provider profile(s)", c.profiles.by_provider.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}
