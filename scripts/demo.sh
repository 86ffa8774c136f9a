#!/usr/bin/env bash
# The main job on the embedded default: a virtual bench of three boards of
# different types streams telemetry into the registry; then a summary.
set -euo pipefail
export EDGE_HOME="${EDGE_HOME:-$PWD/.edge}"
SECONDS_TO_RUN="${DEMO_SECONDS:-20}"

edge sim down >/dev/null 2>&1 || true
trap 'edge sim down' EXIT
edge sim up --board esp32 --board esp32c3 --board picow
edge telemetry ingest --sim --for "$SECONDS_TO_RUN"
edge telemetry show
