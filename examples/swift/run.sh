#!/bin/sh
# Builds the Swift examples and checks them: the chat demo, the wsserver demo
# (an echo over net~shs and ws~shs), and that `wsserver serve` answers GET /
# with its page (checked with curl, or python3 when curl is missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

swift build
swift run chat demo | grep -q "chat demo: done"
swift run wsserver demo | grep -q "wsserver demo: done"

out=${TMPDIR:-/tmp}/multiserver-wsserver.$$.out
page=${TMPDIR:-/tmp}/multiserver-wsserver.$$.html
bin=$(swift build --show-bin-path)
: >"$out"
"$bin/wsserver" serve >"$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out" "$page"' EXIT

url=
i=0
while [ $i -lt 100 ]; do
    url=$(sed -n 's/^wsserver: page at //p' "$out")
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$out"; echo "wsserver: exited early" >&2; exit 1; }
    sleep 0.1
    i=$((i + 1))
done
[ -n "$url" ] || { cat "$out"; echo "wsserver: no page URL" >&2; exit 1; }

if command -v curl >/dev/null 2>&1; then
    curl -fsS "$url" >"$page"
elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$url" >"$page"
else
    echo "wsserver: neither curl nor python3, page not checked" >&2
    echo "examples: ok"
    exit 0
fi
grep -q "<h1>multiserver wsserver</h1>" "$page" || { cat "$page"; echo "wsserver: GET / did not return the page" >&2; exit 1; }
echo "examples: ok ($url)"
