#!/usr/bin/env bash
# Runs the installed-header examples: the echo server on several stacks at
# once (TCP under shs, TCP under noise, WebSocket under shs) and the example
# client over each advertised alternative.
set -euo pipefail
ex=$1
dir=$(dirname "$ex")
out=$(mktemp)
"$ex" "net:127.0.0.1:0~shs;net:127.0.0.1:0~noise;ws://127.0.0.1:0~shs" >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
pass=0; fail=0
IFS=';' read -ra alts <<<"$(head -1 "$out")"
for a in "${alts[@]}"; do
  reply=$(timeout 10 "$dir/client" "$a" "example says hi" 2>/dev/null || true)
  if [ "$reply" = "example says hi" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "example client over $a: got '$reply'" >&2; fi
done
[ ${#alts[@]} -eq 3 ] || fail=$((fail + 1))
echo "examples: $pass passed, $fail failed"
[ $fail -eq 0 ]
