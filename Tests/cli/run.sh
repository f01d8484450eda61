#!/usr/bin/env bash
# CLI and interoperability tests (Python drives the multiserver binary).
set -u
cd "$(dirname "$0")/../.."
MULTISERVER=${MULTISERVER:-build/multiserver}
export MULTISERVER
PY=${PYTHON:-python3}
rc=0
$PY Tests/cli/test_cli.py || rc=1
for t in Tests/interop/*.py; do
  [ -f "$t" ] || continue
  $PY "$t" "$MULTISERVER" || rc=1
done
# A real browser (headless Chromium) against ws + the HTTP handler.
for t in Tests/browser/*.py; do
  [ -f "$t" ] || continue
  $PY "$t" "$MULTISERVER" || rc=1
done
exit $rc
