#!/usr/bin/env bash
# Packaging checks, run by .ci/run and by hand. Changes nothing outside target/ and a scratch
# directory:
#   1. build the .deb (packaging/deb.sh) and check what it ships (dpkg-deb --contents,
#      conffiles, the maintainer scripts),
#   2. unpack it into a scratch root beside the host's own systemd units and run
#      `systemd-analyze verify` on the unit exactly as packaged: ExecStart's /usr/bin/izrelay,
#      /bin/kill and the man page in Documentation= must all exist there. Any warning
#      (an unknown key, a bad value) fails the check, not only errors,
#   3. `systemd-analyze security` must rate the unit's exposure at most 2.0,
#   4. as root: dpkg-install the package into another scratch root (user created, unit not
#      enabled, example config valid), reinstall over an edited config, purge.
# Needs: cargo-deb, dpkg-deb, systemd-analyze (package systemd), python3; man (man-db) to
# check Documentation=. .ci/run installs them on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Exposure from `systemd-analyze security` (0.0 = fully locked down, 10.0 = none); today's unit
# scores 1.1. A change that weakens the sandbox past this must be deliberate. systemd takes
# the threshold in tenths.
MAX_EXPOSURE_TENTHS=20

fail() {
    echo "packaging check FAILED: $*" >&2
    exit 1
}

for tool in systemd-analyze dpkg-deb python3; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install systemd dpkg python3)"
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "-- build the package (packaging/deb.sh)"
packaging/deb.sh | tee "$scratch/deb.log"
deb=$(tail -n 1 "$scratch/deb.log")
echo "package: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'

echo "-- dpkg-deb --contents"
dpkg-deb --contents "$deb" >"$scratch/contents"
sed 's/^/  /' "$scratch/contents"
# The path is the last field of each line (a symlink would add " -> target").
awk '{print $NF}' "$scratch/contents" >"$scratch/paths"
for path in \
    ./usr/bin/izrelay \
    ./usr/lib/systemd/system/izrelay.service \
    ./usr/lib/sysusers.d/izrelay.conf \
    ./usr/lib/tmpfiles.d/izrelay.conf \
    ./etc/izrelay/config.toml \
    ./usr/share/doc/izrelay/config.example.toml \
    ./usr/share/man/man1/izrelay.1.gz \
    ./usr/share/man/man1/izrelay-check-config.1.gz \
    ./usr/share/bash-completion/completions/izrelay \
    ./usr/share/zsh/vendor-completions/_izrelay \
    ./usr/share/fish/vendor_completions.d/izrelay.fish; do
    grep -qxF "$path" "$scratch/paths" || fail "$path is not in $deb"
done
echo "ok: binary, unit, sysusers, tmpfiles, example config, man pages and completions present"

mkdir "$scratch/control"
dpkg-deb --control "$deb" "$scratch/control"
grep -qxF /etc/izrelay/config.toml "$scratch/control/conffiles" ||
    fail "/etc/izrelay/config.toml is not a conffile (an upgrade would overwrite local edits)"
grep -q 'systemd-sysusers.*izrelay.conf' "$scratch/control/postinst" ||
    fail "postinst does not create the izrelay user (systemd-sysusers izrelay.conf)"
if grep -Eq 'deb-systemd-invoke (start|\$_dh_action)' "$scratch/control/postinst"; then
    fail "postinst would start izrelay on a fresh install, before it is configured"
fi
echo "ok: config.toml is a conffile; postinst runs systemd-sysusers and starts nothing"

echo "-- systemd-analyze verify (the packaged unit, in a scratch root)"
root="$scratch/root"
mkdir -p "$root/usr/lib/systemd/system" "$root/usr/bin" "$root/etc"
# What the OS provides: the targets the unit orders itself after, and ExecReload's /bin/kill.
cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
[[ -x /bin/kill ]] || fail "/bin/kill is missing (package procps)"
cp "$(readlink -f /bin/kill)" "$root/usr/bin/kill"
ln -s usr/bin "$root/bin"
# What the package provides, unpacked over it.
dpkg-deb --extract "$deb" "$root"
unit=usr/lib/systemd/system/izrelay.service
echo "verifying $unit with ExecStart=$(grep -m1 '^ExecStart=' "$root/$unit" | cut -d= -f2-)"
man_check=(--man=yes)
if ! command -v man >/dev/null; then
    echo "NOTICE: man is not installed; Documentation=man:izrelay(1) is not checked"
    man_check=(--man=no)
fi
# --root: paths in the unit resolve inside the scratch root; MANPATH: the packaged pages.
if ! MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" "${man_check[@]}" \
    izrelay.service >"$scratch/verify" 2>&1; then
    cat "$scratch/verify"
    fail "systemd-analyze verify failed"
fi
if [[ -s "$scratch/verify" ]]; then
    cat "$scratch/verify"
    fail "systemd-analyze verify warned (above)"
fi
echo "ok: systemd-analyze verify $unit: no errors, no warnings"

echo "-- systemd-analyze security (offline, exposure at most $MAX_EXPOSURE_TENTHS tenths)"
if ! systemd-analyze security --offline=yes --root="$root" --threshold="$MAX_EXPOSURE_TENTHS" \
    izrelay.service >"$scratch/security" 2>&1; then
    cat "$scratch/security"
    fail "the unit's exposure is above $MAX_EXPOSURE_TENTHS tenths"
fi
grep '✗' "$scratch/security" || true
tail -n 1 "$scratch/security"

echo "-- dpkg install, upgrade and purge (in a scratch root, maintainer scripts chrootless)"
if [[ $(id -u) -ne 0 ]]; then
    echo "NOTICE: not root; install test skipped (dpkg needs root even with --root)"
else
    inst="$scratch/inst"
    mkdir -p "$inst/var/lib/dpkg/info" "$inst/var/lib/dpkg/updates" "$inst/etc" "$inst/var/log"
    touch "$inst/var/lib/dpkg/status" "$inst/var/lib/dpkg/available"
    # --force-script-chrootless runs postinst on this machine with DPKG_ROOT set, which
    # systemd-sysusers and deb-systemd-helper honour; --force-depends because the scratch root
    # has no libc6 or systemd package registered. Nothing outside $inst changes.
    dpkg_root=(dpkg --root="$inst" --log="$inst/var/log/dpkg.log" --force-script-chrootless
        --force-depends)
    if ! "${dpkg_root[@]}" --install "$deb" >"$scratch/dpkg.log" 2>&1; then
        cat "$scratch/dpkg.log"
        fail "dpkg --install failed"
    fi
    grep -v 'dependency problems\|is not installed\|^ izrelay depends\|^$' "$scratch/dpkg.log" ||
        true
    grep -qx 'izrelay:x:[0-9]*:[0-9]*:[^:]*:/var/lib/izrelay:/usr/sbin/nologin' \
        "$inst/etc/passwd" || fail "install did not create the izrelay system user"
    # -L: the link points at /usr/lib/..., which need not exist outside $inst.
    wants="$inst/etc/systemd/system/multi-user.target.wants/izrelay.service"
    [[ ! -L "$wants" && ! -e "$wants" ]] ||
        fail "install enabled izrelay.service before it is configured"
    "$inst/usr/bin/izrelay" --config "$inst/etc/izrelay/config.toml" check-config ||
        fail "the installed example config does not pass check-config"
    echo "# local edit" >>"$inst/etc/izrelay/config.toml"
    "${dpkg_root[@]}" --force-confold --install "$deb" >/dev/null 2>&1 ||
        fail "reinstalling (upgrade path) failed"
    grep -qx '# local edit' "$inst/etc/izrelay/config.toml" ||
        fail "an upgrade overwrote the edited /etc/izrelay/config.toml"
    "${dpkg_root[@]}" --purge izrelay >/dev/null 2>&1 || fail "dpkg --purge failed"
    [[ ! -e "$inst/usr/bin/izrelay" && ! -e "$inst/etc/izrelay/config.toml" ]] ||
        fail "purge left izrelay files behind"
    echo "ok: installs (user izrelay, unit not enabled, config passes check-config), upgrade keeps the edited config, purge removes it"
fi

echo "packaging check passed: $deb"
