//! Process hardening done by the binary itself, before any secret is read.
//!
//! A core file of an izrelay process would hold, in clear, the credential key and every IIS
//! password and Dataverse secret it had opened (a [`Secret`](crate::config::vault::Secret) is
//! zeroed on drop, but a crash happens while one is alive, and the TLS and HTTP layers keep
//! copies of what they sent). So on Linux every izrelay process, first thing:
//!
//! - sets `RLIMIT_CORE` to 0, soft and hard (no core file; `systemd-coredump` and apport honour
//!   the limit too), and
//! - marks itself not dumpable (`prctl(PR_SET_DUMPABLE, 0)`, as ssh-agent and gpg-agent do): no
//!   core dump whatever the limit or `core_pattern`, and its `/proc/<pid>` files (`environ`,
//!   `mem`, `fd/`) become root's, so another process of the same user can no longer read
//!   `IZRELAY_KEY` from `/proc/<pid>/environ` or attach a debugger. Root still can.
//!
//! Both are best effort: a failure (a seccomp filter, another OS) is logged as a warning and
//! the command goes on. The systemd unit also sets `LimitCORE=0`.

/// Disables core dumps for this process (see the module docs).
///
/// # Errors
/// The first system call that failed; the other is still tried.
#[cfg(target_os = "linux")]
pub fn disable_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let limit = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
    let dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable);
    limit.and(dumpable).map_err(std::io::Error::from)
}

/// Disables core dumps for this process: nothing to do on this OS (see the module docs).
///
/// # Errors
/// Never.
#[cfg(not(target_os = "linux"))]
pub fn disable_core_dumps() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn core_limit_is_zero_and_the_process_is_not_dumpable() -> std::io::Result<()> {
        use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
        super::disable_core_dumps()?;
        let limit = getrlimit(Resource::Core);
        assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
        assert_eq!(dumpable_behavior()?, DumpableBehavior::NotDumpable);
        Ok(())
    }
}
