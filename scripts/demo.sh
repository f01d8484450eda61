#!/usr/bin/env bash
# Demo: one server listening on eight stacks at once (TCP, unix socket,
# WebSocket, each again under secret-handshake encryption, TCP under Noise
# beside it, and shs with gzip inside), and a client connecting over each,
# printing what happens.
set -euo pipefail
cd "$(dirname "$0")/.."
MS=${MULTISERVER:-build/multiserver}
dir=$(mktemp -d)
srv=
# The server is usually gone already (killed below): the cleanup must not fail
# under set -e, and the script's own exit status must survive it.
trap 'rc=$?; if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; fi; rm -rf "$dir"; exit $rc' EXIT

echo "== server: multiserver serve --echo net:127.0.0.1:0 unix:$dir/plain.sock net:127.0.0.1:0~shs unix:$dir/secret.sock~shs ws://127.0.0.1:0 ws://127.0.0.1:0~shs net:127.0.0.1:0~noise net:127.0.0.1:0~shs~gzip"
$MS serve --echo "net:127.0.0.1:0" "unix:$dir/plain.sock" "net:127.0.0.1:0~shs" "unix:$dir/secret.sock~shs" \
  "ws://127.0.0.1:0" "ws://127.0.0.1:0~shs" "net:127.0.0.1:0~noise" "net:127.0.0.1:0~shs~gzip" \
  >"$dir/addr" 2>"$dir/log" &
srv=$!
for _ in $(seq 50); do [ -s "$dir/addr" ] && break; sleep 0.1; done
addr=$(head -1 "$dir/addr")
echo "== the server advertises one multiaddress:"
echo "   $addr"
echo
IFS=';' read -ra alts <<<"$addr"
for a in "${alts[@]}"; do
  proto=${a%%:*}
  msg="hello over $proto"
  if [[ $a == *~shs:* ]]; then msg="$msg + shs"; fi
  if [[ $a == *~noise:* ]]; then msg="$msg + noise"; fi
  if [[ $a == *~gzip* ]]; then msg="$msg + gzip"; fi
  echo "== client: echo '$msg' | multiserver connect '$a'"
  reply=$(printf '%s' "$msg" | $MS connect "$a")
  echo "   reply: $reply"
done
echo
echo "== 4 MiB through the encrypted TCP stack:"
head -c 4194304 /dev/urandom >"$dir/blob"
a=${alts[2]}
if $MS connect "$a" <"$dir/blob" | cmp -s - "$dir/blob"; then echo "   echoed back intact (cmp ok)"; else echo "   MISMATCH"; exit 1; fi
echo
echo "== 4 MiB through the encrypted WebSocket stack:"
a=${alts[5]}
if $MS connect "$a" <"$dir/blob" | cmp -s - "$dir/blob"; then echo "   echoed back intact (cmp ok)"; else echo "   MISMATCH"; exit 1; fi
echo
echo "== 4 MiB through Noise, served beside shs with the same key:"
a=${alts[6]}
if $MS connect "$a" <"$dir/blob" | cmp -s - "$dir/blob"; then echo "   echoed back intact (cmp ok)"; else echo "   MISMATCH"; exit 1; fi
a=${alts[2]}
echo
echo "== a client that dials with the wrong server key:"
$MS connect "${a%~shs:*}~shs:$($MS keygen | sed 's/^@//; s/\.ed25519$//')" </dev/null 2>&1 | sed 's/^/   /' || true
kill $srv; wait $srv 2>/dev/null || true
echo
echo "== server log (stderr):"
sed 's/^/   /' "$dir/log"
