#!/usr/bin/env bash
# Runs every C test binary in $1 (a build dir), sums their closing lines and
# prints one "c-tests: N passed, N failed" line. Exit status non-zero if any
# binary failed or crashed.
set -u
dir=${1:-build}
pass=0; fail=0; bad=0
for t in "$dir"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$(cd "$(dirname "$0")/../.." && timeout 600 "$t" 2>"$dir/tests/$(basename "$t").stderr")
  rc=$?
  echo "$out"
  line=$(echo "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(echo "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0}))
  if [ $rc -ne 0 ]; then
    bad=$((bad + 1))
    echo "FAILED: $t (exit $rc); stderr:" >&2
    tail -40 "$dir/tests/$(basename "$t").stderr" >&2
    [ -z "$line" ] && fail=$((fail + 1))
  fi
done
echo "c-tests: $pass passed, $fail failed"
[ $bad -eq 0 ] && [ $fail -eq 0 ]
