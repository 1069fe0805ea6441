#!/usr/bin/env bash
# Builds the Debian package: the binary (profile `dist`: built for size, full LTO, one codegen unit;
# without the `simulators` feature, so no `izrelay sim` or `izrelay demo`), then the man pages
# and shell completions it generates (assets under target/release/packaging/ in Cargo.toml,
# which cargo-deb maps to target/dist/), then `cargo deb`.
# Extra arguments go to `cargo deb` (e.g. --deb-revision 2). Needs cargo-deb:
#   cargo install cargo-deb --version 3.8.0 --locked
# Prints the path of the .deb on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "deb.sh: cargo-deb is missing: cargo install cargo-deb --version 3.8.0 --locked" >&2
    exit 1
fi

# The real target dir (CARGO_TARGET_DIR or build.target-dir may move it); cargo-deb maps the
# `target/release/` prefix of an asset to the same place.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

echo "-- cargo build --profile dist --no-default-features"
cargo build --profile dist --no-default-features --locked
bin="$target_dir/dist/izrelay"
out="$target_dir/dist/packaging"

echo "-- man pages and completions into $out"
rm -rf "$out"
mkdir -p "$out/completions"
"$bin" man --dir "$out/man" >/dev/null
# Debian policy wants man pages gzipped. cargo-deb gzips static assets, but it takes anything
# under target/<profile>/ for a build product and leaves it alone. -n: no timestamp in the file.
gzip -9n "$out"/man/*.1
"$bin" completions bash >"$out/completions/izrelay.bash"
"$bin" completions zsh >"$out/completions/_izrelay"
"$bin" completions fish >"$out/completions/izrelay.fish"
echo "$(find "$out/man" -name '*.1.gz' | wc -l) man pages, 3 completion scripts"

echo "-- cargo deb"
# --no-build: the binary above is the one the man pages came from.
deb=$(cargo deb --no-build --profile dist --no-default-features --locked "$@" | tail -n 1)
if [[ ! -f "$deb" ]]; then
    echo "deb.sh: cargo deb did not print a package path (got: $deb)" >&2
    exit 1
fi
echo "$deb"
