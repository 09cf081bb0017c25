#!/usr/bin/env bash
# Coverage-guided fuzzing of the hub's parsers with libFuzzer (entry points in Sources/HubFuzz).
#
#   bash Tests/fuzz/run.sh TARGET SECONDS   fuzz one target (frames, handshake, resp, ingest, token)
#   bash Tests/fuzz/run.sh all SECONDS      fuzz every target, one after the other, SECONDS each
#   bash Tests/fuzz/run.sh merge TARGET     add to Tests/fuzz/corpus/TARGET the fewest fuzzing findings (from
#                                           .build-fuzz/corpus/TARGET) that cover what the seed-* files do not
#
# Builds the sanitizer binary once (.build-fuzz, release, -sanitize=fuzzer,address), starts from the committed
# corpus Tests/fuzz/corpus/<target>/ and writes new inputs to .build-fuzz/corpus/<target>/ (outside git), crashes to
# .build-fuzz/artifacts/<target>/. Exits non-zero when any target crashed, leaked, timed out or ran out of memory.
# HUB_FUZZ_FLAGS adds libFuzzer flags (e.g. "-jobs=2").
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
targets=(frames handshake resp ingest token)
scratch=.build-fuzz

usage() {
  echo "usage: bash Tests/fuzz/run.sh TARGET|all SECONDS | merge TARGET   (targets: ${targets[*]})" >&2
  exit 2
}
[ $# -eq 2 ] || usage
known() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

echo "== build (libFuzzer + AddressSanitizer)"
started=$(date +%s)
mkdir -p "$scratch"
if ! swift build -c release --scratch-path "$scratch" --product HubFuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -g >"$scratch/build.log" 2>&1; then
  tail -n 30 "$scratch/build.log" >&2
  exit 1
fi
tail -n 1 "$scratch/build.log"
echo "build: $(($(date +%s) - started)) s"
bin=$scratch/release/HubFuzz
# Swift's crash backtracer does not run under AddressSanitizer; libFuzzer prints the stack itself.
export SWIFT_BACKTRACE=enable=no

if [ "$1" = merge ]; then
  known "$2" || usage
  t=$2
  merged=$scratch/merged/$t
  rm -rf "$merged"
  mkdir -p "$merged" "$scratch/corpus/$t"
  # The seeds stay as they are; fuzzing findings are added only where they cover what the seeds do not.
  cp Tests/fuzz/corpus/"$t"/seed-* "$merged"/
  HUB_FUZZ_TARGET=$t nice -n 10 "$bin" -set_cover_merge=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    "$merged" "Tests/fuzz/corpus/$t" "$scratch/corpus/$t" >"$scratch/merge-$t.log" 2>&1
  grep -E "MERGE-OUTER: [0-9]+ new files" "$scratch/merge-$t.log" || true
  rm -rf "Tests/fuzz/corpus/$t"
  mv "$merged" "Tests/fuzz/corpus/$t"
  echo "$t: $(ls "Tests/fuzz/corpus/$t" | wc -l) files, $(du -sb "Tests/fuzz/corpus/$t" | cut -f1) bytes"
  exit 0
fi

case $1 in
  all) selected=("${targets[@]}") ;;
  *) known "$1" || usage; selected=("$1") ;;
esac
seconds=$2
[[ $seconds =~ ^[0-9]+$ ]] || usage

failed=0
printf '%-10s %12s %7s %14s %8s %8s  %s\n' target executions seconds "corpus(files)" bytes rss_mb crashes
for t in "${selected[@]}"; do
  work=$scratch/corpus/$t
  artifacts=$scratch/artifacts/$t
  log=$scratch/logs/$t.log
  mkdir -p "$work" "$artifacts" "$scratch/logs"
  before=$(ls "$artifacts" | wc -l)
  t0=$(date +%s)
  status=0
  # shellcheck disable=SC2086
  HUB_FUZZ_TARGET=$t nice -n 10 "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" ${HUB_FUZZ_FLAGS:-} \
    "$work" "Tests/fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  elapsed=$(($(date +%s) - t0))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  files=$(($(ls "$work" | wc -l) + $(ls "Tests/fuzz/corpus/$t" | wc -l)))
  bytes=$(($(du -sb "$work" | cut -f1) + $(du -sb "Tests/fuzz/corpus/$t" | cut -f1)))
  found=$(($(ls "$artifacts" | wc -l) - before))
  printf '%-10s %12s %7s %14s %8s %8s  %s\n' "$t" "${execs:-?}" "$elapsed" "$files" "$bytes" "${rss:-?}" "$found"
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed=1
    echo "$t: libFuzzer exited with $status; the log is $log; inputs in $artifacts:" >&2
    grep -E "ERROR: |Fatal error|invariant violated|SUMMARY|Test unit written" "$log" | head -n 8 >&2 || true
    echo "reproduce: HUB_FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no $bin <artifact>" >&2
  fi
done
exit $failed
