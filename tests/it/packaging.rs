//! What the Debian package ships besides the binary: shell completions and man pages generated
//! from the clap definitions (`izrelay completions`, `izrelay man`), and the files in
//! `packaging/` that must agree with the CLI.

use std::process::Output;

use crate::util::{izrelay, root};

/// Subcommands a completion script and the man page must name (a sample across the tree).
const COMMANDS: [&str; 8] =
    ["demo", "check-config", "status", "forward", "credentials", "hl7", "completions", "man"];

fn run(args: &[&str]) -> Output {
    izrelay().args(args).output().expect("izrelay runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

#[test]
fn bash_completion_names_the_subcommands() {
    let script = stdout(&run(&["completions", "bash"]));
    assert!(script.contains("_izrelay()"), "not a bash completion function:\n{script}");
    assert!(script.contains("complete -F _izrelay"), "{script}");
    for cmd in COMMANDS {
        assert!(script.contains(cmd), "{cmd} missing from the bash completion");
    }
    // Nested subcommands and global flags too.
    for word in ["generate", "rotate-key", "--data-dir", "--config"] {
        assert!(script.contains(word), "{word} missing from the bash completion");
    }
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    for (shell, marker) in [
        ("zsh", "#compdef izrelay"),
        ("fish", "complete -c izrelay"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[izrelay]"),
    ] {
        let script = stdout(&run(&["completions", shell]));
        assert!(script.contains(marker), "{shell}: {marker} missing");
        assert!(script.contains("check-config"), "{shell}: subcommands missing");
    }
    let o = run(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("possible values"));
}

#[test]
fn man_prints_a_roff_page_that_names_the_commands() {
    let page = stdout(&run(&["man"]));
    assert!(page.contains(".TH IZRELAY 1"), "no .TH IZRELAY title:\n{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS", ".SH FILES"] {
        assert!(page.contains(section), "{section} missing");
    }
    for cmd in COMMANDS {
        assert!(page.contains(&format!("izrelay\\-{}(1)", cmd.replace('-', "\\-"))), "{cmd}");
    }
    assert!(page.contains("IZRELAY_DATA_DIR") && page.contains("/var/lib/izrelay"));
    assert!(!page.contains("izrelay\\-help(1)"), "no page exists for clap's help subcommand");
}

#[test]
fn man_dir_writes_a_page_for_every_subcommand_it_refers_to() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = stdout(&run(&["man", "--dir", dir.path().to_str().expect("utf-8 path")]));
    let main = std::fs::read_to_string(dir.path().join("izrelay.1")).expect("izrelay.1");
    assert_eq!(main, stdout(&run(&["man"])), "--dir writes the same izrelay(1)");
    for name in ["izrelay-status.1", "izrelay-hl7-generate.1", "izrelay-credentials-rotate-key.1"] {
        let page = std::fs::read_to_string(dir.path().join(name)).expect(name);
        assert!(page.contains(".SH SYNOPSIS"), "{name}");
        assert!(out.contains(name), "{name} not listed in:\n{out}");
    }
    // Every `izrelay-x(1)` that izrelay(1) names exists.
    for line in main.lines().filter(|l| l.starts_with("izrelay\\-") && l.ends_with("(1)")) {
        let file = format!("{}.1", line.trim_end_matches("(1)").replace("\\-", "-"));
        assert!(dir.path().join(&file).is_file(), "{file} referenced but not written");
    }
}

#[test]
fn the_unit_runs_commands_the_binary_has() {
    let unit = std::fs::read_to_string(root().join("packaging/izrelay.service")).expect("unit");
    let exec = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("{key}= missing from the unit"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    let pre = exec("ExecStartPre");
    assert_eq!(pre[0], "/usr/bin/izrelay");
    assert_eq!(pre[1..], ["--config", "/etc/izrelay/config.toml", "check-config"]);
    // The packaged example config passes that check, so the unit starts once it is edited.
    let example = root().join("packaging/config.example.toml");
    let o = run(&["--config", example.to_str().expect("utf-8 path"), "check-config"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let start = exec("ExecStart");
    assert_eq!(start[0], "/usr/bin/izrelay");
    assert_eq!(start.last().map(String::as_str), Some("run"));
    // The unit's flags must parse: clap checks them all before it prints `run --help`. The
    // daemon (`run`, `--log-format`) lands separately; until then this part cannot run.
    if run(&["run", "--help"]).status.success() {
        let mut args: Vec<&str> = start[1..].iter().map(String::as_str).collect();
        args.push("--help");
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    } else {
        eprintln!("NOTICE: this binary has no `run` subcommand; ExecStart flags not checked");
    }
    assert!(unit.contains("Environment=IZRELAY_DATA_DIR=/var/lib/izrelay"));
    assert!(unit.contains("StateDirectory=izrelay"));
}
