#!/usr/bin/env bash
# Runs the fuzz targets for a while each and reports what they found.
#
#   fuzz/run.sh                 # every target, 60 s each
#   fuzz/run.sh 300 router      # one target, 5 minutes
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz when it is missing. Each target starts from its committed seeds
# (fuzz/seeds/<target>/) and saved crashes (fuzz/regressions/<target>/), with
# its dictionary (fuzz/dicts/<target>.dict); the corpus it grows is kept in
# fuzz/corpus/<target>/ (git-ignored) for the next run. A crash's input is
# copied to fuzz/regressions/<target>/, where `cargo test` (stable) replays it:
# see docs/fuzzing.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config import_nginx scenario router)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== building ${targets[*]} (nightly, address sanitizer)"
for target in "${targets[@]}"; do
    cargo +nightly fuzz build "$target"
done

status=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "regressions/$target" "artifacts/$target"
    log="artifacts/$target/run.log"
    echo "== fuzzing $target for ${seconds}s (log: fuzz/$log)"
    # -max_total_time bounds the run; crashes stop it early. Seeds and
    # regressions are read-only extra corpus folders: new inputs go to corpus/.
    set +e
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -dict="dicts/$target.dict" -max_len=4096 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    code=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    crashes=()
    for file in artifacts/"$target"/crash-* artifacts/"$target"/oom-* artifacts/"$target"/timeout-*; do
        [ -e "$file" ] || continue
        name=$(basename "$file")
        if [ ! -e "regressions/$target/$name" ]; then
            cp "$file" "regressions/$target/$name"
            crashes+=("fuzz/regressions/$target/$name")
        fi
    done
    if [ $code -ne 0 ] || [ ${#crashes[@]} -gt 0 ]; then
        status=1
        summary+=("$target: ${runs:-?} executions, FAILED (exit $code) ${crashes[*]:-}")
        grep -m1 -A12 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" || tail -20 "$log"
    else
        summary+=("$target: ${runs:-?} executions, no crash")
    fi
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ $status -ne 0 ]; then
    echo "A crash input is in fuzz/regressions/<target>/; replay it on stable with"
    echo "  cargo test -p proxy --test fuzz_regressions   (or -p lab for scenario)"
    echo "or under the fuzzer with: cargo +nightly fuzz run <target> fuzz/regressions/<target>/<file>"
fi
exit $status
