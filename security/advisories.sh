#!/usr/bin/env bash
# RustSec advisories for izrelay's dependency tree (`cargo deny check advisories`, deny.toml).
#
#   security/advisories.sh            check against the live RustSec database when github.com
#                                     answers, else against the snapshot in security/advisory-db/
#   security/advisories.sh refresh    replace the snapshot with upstream's current database
#                                     (needs github.com; commit the result)
#
# Why a snapshot: CI machines here cannot reach github.com, where the database lives, and a
# check that silently does not run protects nothing. The snapshot is a plain copy of upstream's
# `crates/` and `rust/` trees (CC0-1.0, see security/advisory-db/LICENSE.txt) with its commit and
# date in security/advisory-db/SNAPSHOT; the check says which one it used and how old it is.
# Needs cargo-deny 0.20 and git.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
snap=security/advisory-db
upstream=https://github.com/rustsec/advisory-db

refresh() {
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    git clone --quiet --depth 1 "$upstream" "$tmp/db"
    rm -rf "${snap:?}/crates" "${snap:?}/rust"
    (cd "$tmp/db" && git archive HEAD crates rust LICENSE.txt README.md) | tar -x -C "$snap"
    printf 'commit %s\ndate %s\n' "$(git -C "$tmp/db" rev-parse HEAD)" \
        "$(git -C "$tmp/db" show -s --format=%cI HEAD)" >"$snap/SNAPSHOT"
    echo "snapshot refreshed: $(tr '\n' ' ' <"$snap/SNAPSHOT")"
}

check_live() {
    echo "advisories: the live RustSec database ($upstream)"
    cargo deny --locked check advisories
}

check_snapshot() {
    local commit date age work config out dir
    commit=$(awk '$1 == "commit" {print $2}' "$snap/SNAPSHOT")
    date=$(awk '$1 == "date" {print $2}' "$snap/SNAPSHOT")
    age=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
    echo "NOTICE: github.com is unreachable: advisories checked against the RustSec snapshot in" \
        "$snap (upstream commit ${commit:0:12} of $date, $age days old; refresh with" \
        "'security/advisories.sh refresh' where github.com is reachable)"
    # cargo-deny reads its database as a git checkout under db-path (it asks git for HEAD's
    # date) and, offline, never fetches: give it one made from the snapshot, dated as upstream's
    # commit, in a scratch copy of deny.toml that differs only in db-path.
    work=$root/target/advisory-snapshot
    rm -rf "$work"
    mkdir -p "$work/dbs"
    config=$work/deny.toml
    awk -v path="$work/dbs" '{print} /^\[advisories\]$/ {print "db-path = \"" path "\""}' \
        deny.toml >"$config"
    # The directory name cargo-deny derives from the database URL (a hash): ask it.
    out=$(cargo deny --offline --locked --config "$config" check advisories 2>&1 || true)
    dir=$(grep -o "$work/dbs/advisory-db-[0-9a-f]*" <<<"$out" | head -n 1 || true)
    if [[ -z $dir ]]; then
        echo "security/advisories.sh: cannot tell where cargo-deny looks for its database:" >&2
        echo "$out" >&2
        exit 1
    fi
    mkdir -p "$dir"
    cp -r "$snap/crates" "$snap/rust" "$dir/"
    git -C "$dir" init --quiet
    git -C "$dir" add -A
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$dir" \
        -c user.name=izrelay -c user.email=ci@example.invalid commit --quiet \
        -m "RustSec advisory-db $commit"
    cargo deny --offline --locked --config "$config" check advisories
}

case ${1:-check} in
refresh) refresh ;;
check)
    if timeout 300 cargo deny --locked fetch db >/dev/null 2>&1; then
        check_live
    else
        check_snapshot
    fi
    ;;
*)
    echo "usage: security/advisories.sh [check|refresh]" >&2
    exit 2
    ;;
esac
