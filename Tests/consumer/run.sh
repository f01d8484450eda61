#!/bin/sh
# Builds Tests/consumer, a separate package depending on this one by path,
# checks that none of multiserver's strict build settings reach it, and runs
# its client/server test. Called by `make swift-test`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
log=${TMPDIR:-/tmp}/multiserver-consumer-build.$$.log
trap 'rm -f "$log"' EXIT

# The maintainers' strict build: warnings are errors in this checkout (its
# own scratch path, so that it does not rebuild the default one).
(cd ../.. && MULTISERVER_STRICT=1 swift build --target MultiServer --scratch-path .build-strict)

swift build -v >"$log" 2>&1 || { cat "$log"; exit 1; }
# -warnings-as-errors must not leak to a path-dependency user.
if grep -e '-module-name MultiServer ' "$log" | grep -q -e '-warnings-as-errors'; then
    echo "consumer: MultiServer is built with -warnings-as-errors as a dependency" >&2
    exit 1
fi
swift run ConsumerApp | grep -q "hello from a consumer"
swift test --disable-xctest
# The Swift examples (examples/swift, also a package by path): the chat demo
# and the server on net and ws that serves its page.
(cd ../../examples/swift && ./run.sh)
echo "consumer: ok"
