#!/usr/bin/env bash
# The main job on the embedded default: a virtual bench of three blank boards
# of different types is flashed as a technician would (agent, identity, label,
# self-test), then streams telemetry into the registry; then a summary.
set -euo pipefail
export EDGE_HOME="${EDGE_HOME:-$PWD/.edge}"
SECONDS_TO_RUN="${DEMO_SECONDS:-20}"

edge sim down >/dev/null 2>&1 || true
rm -rf "$EDGE_HOME/sim"          # blank boards every time: the demo starts from nothing
trap 'edge sim down' EXIT
edge sim up --blank --board esp32 --board esp32c3 --board picow
edge flash --all
first=$(edge flash --all --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["device_id"])')
edge label "$first" 2>/dev/null || echo "(label for $first was printed on an earlier run)"
edge telemetry ingest --sim --for "$SECONDS_TO_RUN"
edge telemetry show
cat <<EOT

The demo's registry and bench folder are in $EDGE_HOME (not the default
~/.local/share/edge). To look at them again, point edge there:
  export EDGE_HOME=$EDGE_HOME PATH=$PWD/.venv/bin:\$PATH
  edge telemetry show
  edge telemetry export --format senml-json -o records.json
EOT
