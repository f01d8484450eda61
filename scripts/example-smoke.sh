#!/usr/bin/env bash
# Runs the installed-header example echo server once and talks to it.
set -euo pipefail
ex=$1
MS=${MULTISERVER:-build/multiserver}
out=$(mktemp)
"$ex" --once "net:127.0.0.1:0~shs" >"$out" &
pid=$!
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
reply=$(echo "example says hi" | timeout 10 "$MS" connect "$(head -1 "$out")")
wait $pid
rm -f "$out"
[ "$reply" = "example says hi" ] && echo "examples: 1 passed, 0 failed" || { echo "examples: 0 passed, 1 failed"; exit 1; }
