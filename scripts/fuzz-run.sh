#!/usr/bin/env bash
# Runs one libFuzzer target (under ASan+UBSan, as built by make fuzz) for
# $FUZZ_SECONDS on a working copy of its committed corpus; prints its stats
# line, or its log's tail and fails on a crash. make fuzz runs FUZZ_JOBS of
# these at a time.
set -u
f=$1; build=$2; secs=$3
n=$(basename "$f")
mkdir -p "$build/fuzz/corpus-$n"
if [ -d "Tests/fuzz/corpus/$n" ]; then cp -n Tests/fuzz/corpus/$n/* "$build/fuzz/corpus-$n/" 2>/dev/null; fi
if ! "$f" -max_total_time="$secs" -print_final_stats=1 "$build/fuzz/corpus-$n" >"$build/fuzz/$n.log" 2>&1; then
  echo "fuzzing $n for ${secs}s: FAILED"; tail -50 "$build/fuzz/$n.log"; exit 1
fi
echo "fuzzing $n for ${secs}s: $(grep -E 'stat::number_of_executed_units' "$build/fuzz/$n.log" | tail -1 | awk '{print $2}') runs, no crash"
