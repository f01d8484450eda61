#!/usr/bin/env bash
# Runs every C test binary in $1/tests under valgrind memcheck. A binary
# fails on its own failed checks, on any memcheck error (invalid read or
# write, use of uninitialised values, a bad free) and on any leak (definite,
# indirect or possible). Prints one line per binary and a summary;
# logs go to $1/valgrind/. Children started with exec (daemons, ip, nft) are
# not traced; forked children (test_lossy) are.
set -u
dir=${1:-build}
out="$dir/valgrind"
mkdir -p "$out"
cd "$(dirname "$0")/../.."
export MS_CYCLES=${VALGRIND_CYCLES:-300} MS_CYCLES_NO_RSS=1
bad=0; n=0; t0=$(date +%s)
for t in "$dir"/tests/test_*; do
  [ -x "$t" ] || continue
  b=$(basename "$t"); n=$((n + 1)); s=$(date +%s)
  timeout 1800 valgrind --quiet --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions=Tests/c/valgrind.supp --log-file="$out/$b.%p.log" \
    "$t" >"$out/$b.out" 2>"$out/$b.err"
  rc=$?
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$out/$b.out" | tail -1)
  echo "$b: ${line:-no summary} (exit $rc, $(( $(date +%s) - s )) s)"
  if [ $rc -ne 0 ]; then
    bad=$((bad + 1))
    for l in "$out/$b".*.log; do [ -s "$l" ] && head -60 "$l"; done
    tail -20 "$out/$b.err"
  fi
done
echo "valgrind: $n binaries, $bad failed, $(( $(date +%s) - t0 )) s"
[ $bad -eq 0 ]
