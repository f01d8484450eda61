#!/usr/bin/env bash
# Runs every C test binary in $1/tests under valgrind memcheck. A binary
# fails on any memcheck error (invalid read or
# write, use of uninitialised values, a bad free) and on any leak (definite,
# indirect or possible), a crash or a timeout; its own failed checks are
# reported as warnings (see below). Prints one line per binary and a summary;
# logs go to $1/valgrind/. Children are not checked: those started with exec
# (daemons, ip, nft) are not traced, forked ones are silenced (see below).
set -u
dir=${1:-build}
out="$dir/valgrind"
mkdir -p "$out"
cd "$(dirname "$0")/../.."
export MS_CYCLES=${VALGRIND_CYCLES:-300} MS_CYCLES_NO_RSS=1
bad=0; warn=0; n=0; t0=$(date +%s)
for t in "$dir"/tests/test_*; do
  [ -x "$t" ] || continue
  b=$(basename "$t"); n=$((n + 1)); s=$(date +%s)
  rm -f "$out/$b".*.log
  # --child-silent-after-fork: a child forked without exec (test_multiserver's
  # other-uid clients, test_lossy's two ends) exits with _exit holding the
  # parent's heap, which memcheck would list as lost.
  timeout 1800 valgrind --quiet --error-exitcode=99 --leak-check=full --child-silent-after-fork=yes \
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions=Tests/c/valgrind.supp --log-file="$out/$b.%p.log" \
    "$t" >"$out/$b.out" 2>"$out/$b.err"
  rc=$?
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$out/$b.out" | tail -1)
  echo "$b: ${line:-no summary} (exit $rc, $(( $(date +%s) - s )) s)"
  # 99: memcheck found an error or a leak (in the test process or a forked
  # child); >= 124: timeout or a signal. A failed check with a clean
  # memcheck (exit 1) is a warning only: under valgrind's ~30x slowdown the
  # suites' timing bounds (a timeout that must fire within 800 ms) can miss,
  # and the plain and ASan runs already hold every check.
  logs=$(for l in "$out/$b".*.log; do [ -s "$l" ] && echo "$l"; done)
  if [ $rc -eq 99 ] || [ $rc -ge 124 ] || [ -n "$logs" ]; then
    bad=$((bad + 1))
    for l in $logs; do head -80 "$l"; done
    tail -20 "$out/$b.err"
  elif [ $rc -ne 0 ]; then
    warn=$((warn + 1))
    echo "  warning: checks failed under valgrind (memcheck clean):"
    grep -E 'CHECK failed|TIMEOUT' "$out/$b.err" | head -5 | sed 's/^/    /'
  fi
done
echo "valgrind: $n binaries, $bad with memcheck errors, $warn with timing warnings, $(( $(date +%s) - t0 )) s"
[ $bad -eq 0 ]
