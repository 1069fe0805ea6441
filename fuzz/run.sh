#!/usr/bin/env bash
# Runs one fuzz target, niced, one fuzzing process, with the limits of fuzz/README.md.
# Usage: fuzz/run.sh TARGET [SECONDS] [EXTRA_CORPUS_DIR...]
# libFuzzer's own output (-jobs=1 writes it to fuzz-0.log) ends up in
# fuzz/artifacts/TARGET/last-run.log; its final stats are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
target=$1
secs=${2:-600}
shift $(($# >= 2 ? 2 : 1))
mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
RUSTC_BOOTSTRAP=1 nice -n 10 cargo fuzz run -s none "$target" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" "$@" -- \
    -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -max_len=65536 \
    -jobs=1 -workers=1 -print_final_stats=1
status=$?
if [ -f fuzz-0.log ]; then
    mv fuzz-0.log "fuzz/artifacts/$target/last-run.log"
    grep -E '^(Done|stat::|==[0-9]+== ERROR|thread .* panicked)' "fuzz/artifacts/$target/last-run.log"
fi
exit $status
