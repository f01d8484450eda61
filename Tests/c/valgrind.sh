#!/usr/bin/env bash
# Runs every C test binary in $1/tests under valgrind memcheck. A binary
# fails on any memcheck error (invalid read or
# write, use of uninitialised values, a bad free) and on any leak (definite,
# indirect or possible), a crash or a timeout; its own failed checks are
# reported as warnings (see below). Prints one line per binary and a summary;
# logs go to $1/valgrind/ (children: see below).
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
  # The test process's own log must stay empty (--quiet prints only errors
  # and leaks). Children: those started with exec (daemons, ip, nft) are not
  # traced; a child forked without exec (test_multiserver's other-uid
  # clients, test_lossy's two ends) exits with _exit holding a copy of the
  # parent's heap, which memcheck lists as lost, so in their logs only
  # memory errors count, not leaks. No --error-exitcode: a child's leak
  # report would change its exit status, which the tests check.
  # (the shell writes its pid, then becomes valgrind: the test's pid)
  timeout 1800 sh -c 'echo $$ >"$0.pid"; exec valgrind --quiet --leak-check=full \
    --show-leak-kinds=definite,indirect,possible \
    --suppressions=Tests/c/valgrind.supp --log-file="$0.%p.log" "$1"' \
    "$out/$b" "$t" >"$out/$b.out" 2>"$out/$b.err"
  rc=$?
  pid=$(cat "$out/$b.pid")
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$out/$b.out" | tail -1)
  echo "$b: ${line:-no summary} (exit $rc, $(( $(date +%s) - s )) s)"
  main="$out/$b.$pid.log"
  kids=$(for l in "$out/$b".*.log; do [ "$l" != "$main" ] && grep -lE \
    'Invalid (read|write|free)|uninitialised|Mismatched free|overlap|Syscall param' "$l"; done)
  # >= 124: timeout or a signal. A failed check with a clean memcheck is a
  # warning only: under valgrind's ~30x slowdown the suites' timing bounds
  # (a timeout that must fire within 800 ms) can miss, and the plain and
  # ASan runs already hold every check.
  if [ -s "$main" ] || [ -n "$kids" ] || [ $rc -ge 124 ]; then
    bad=$((bad + 1))
    for l in $main $kids; do [ -s "$l" ] && head -80 "$l"; done
    tail -20 "$out/$b.err"
  elif [ $rc -ne 0 ]; then
    warn=$((warn + 1))
    echo "  warning: checks failed under valgrind (memcheck clean):"
    grep -E 'CHECK failed|TIMEOUT' "$out/$b.err" | head -5 | sed 's/^/    /'
  fi
done
echo "valgrind: $n binaries, $bad with memcheck errors, $warn with timing warnings, $(( $(date +%s) - t0 )) s"
[ $bad -eq 0 ]
