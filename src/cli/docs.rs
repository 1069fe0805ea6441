//! `izrelay completions SHELL` and `izrelay man`: shell completions and manual pages generated
//! from the clap definitions in `cli/mod.rs`, so they cannot drift from the real flags. The
//! Debian package ships both; `packaging/deb.sh` writes them before `cargo deb` (see
//! `packaging/README.md`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// Write izrelay.1 and one page per subcommand (izrelay-status.1, izrelay-hl7-generate.1, …)
    /// into DIR instead of printing izrelay.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Sections clap does not know about, appended to izrelay(1). Plain roff: `\-` is a real hyphen
/// (a bare `-` may render as a dash), `\fB`/`\fI`/`\fR` switch to bold, italic and roman.
const EXTRA_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBIZRELAY_CONFIG\fR
The configuration file, as \fB\-\-config\fR.
.TP
\fBIZRELAY_DATA_DIR\fR
Where the database (izrelay.db) and the key file (izrelay.key) live, as \fB\-\-data\-dir\fR.
.TP
\fBIZRELAY_KEY\fR
The credential key as 64 hex digits; wins over the key file. \fBIZRELAY_NEW_KEY\fR holds the
new key for \fBizrelay credentials rotate\-key\fR.
.TP
\fBIZRELAY_DATAVERSE_SECRET\fR
Read by \fBizrelay credentials dataverse\-secret\fR instead of standard input.
.TP
\fBRUST_LOG\fR
A tracing filter (for example \fIizrelay=debug\fR); wins over \fB\-v\fR and \fB\-q\fR.
.SH FILES
.TP
\fI/etc/izrelay/config.toml\fR
The configuration read by the systemd unit; check it with \fBizrelay check\-config\fR.
Without \fB\-\-config\fR, izrelay reads config.toml in the platform's configuration
directory (Linux: \fI~/.config/izrelay\fR).
.TP
\fI/var/lib/izrelay/izrelay.db\fR
The outbox, the notification log and the sealed credentials (SQLite), under the service.
.TP
\fI/var/lib/izrelay/izrelay.key\fR
The credential key (32 bytes, mode 0600). Back it up: without it the stored credentials
cannot be read.
.SH EXIT STATUS
0 on success; 1 when the command ran and found a problem it reports (an invalid configuration
or record, inputs that are not records, an IIS that refused or could not be reached); 2 on bad
input or an error, printed on standard error.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1); /usr/share/doc/izrelay/config.example.toml
"#;

/// Prints the completion script for `args.shell` on standard output.
///
/// # Errors
/// Standard output cannot be written.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    // Generate into memory: clap_complete panics on a write error, and `| head` is not a panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "izrelay", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints izrelay(1), or with `--dir` writes it and a page per subcommand.
///
/// # Errors
/// Standard output or a file in `--dir` cannot be written.
pub(crate) fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    // No page for clap's `help` subcommand (what clap_mangen::generate_to does too).
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            render_main(cmd, &mut page)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&page)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                write_pages(sub, dir)?;
            }
            let path = dir.join("izrelay.1");
            let mut page = Vec::new();
            render_main(cmd, &mut page)?;
            std::fs::write(&path, page)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// izrelay(1): clap's sections, titled in capitals as man pages are, plus [`EXTRA_SECTIONS`].
fn render_main(cmd: clap::Command, w: &mut Vec<u8>) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).title("IZRELAY").manual("izrelay manual").render(w)?;
    w.write_all(EXTRA_SECTIONS.as_bytes())
}

/// Writes `cmd`'s page and its subcommands' pages, named after clap's display names
/// (`izrelay-hl7-generate.1`), which is how izrelay(1) refers to them.
fn write_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).manual("izrelay manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
