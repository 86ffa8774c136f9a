#!/usr/bin/env bash
# The main job on the embedded default: a virtual bench of three blank boards
# of different types is flashed as a technician would (agent, identity, label,
# self-test) and streams telemetry over its serial console; then an owner
# pairs each board over BLE with the code on its label, and a gateway keeps
# them connected and stores their telemetry; then a release engineer signs a
# new agent for the Pico W and it reaches the board over BLE, which installs
# it, boots it on trial and confirms it; then the same bench commands on an
# emulated Pico running the real MicroPython rp2 firmware (when Node.js is
# here: `make test-emulated` installs it); then a summary.
set -euo pipefail
export EDGE_HOME="${EDGE_HOME:-$PWD/.edge}"
SECONDS_TO_RUN="${DEMO_SECONDS:-20}"

edge sim down >/dev/null 2>&1 || true
rm -rf "$EDGE_HOME"              # blank boards and a new registry every time: the demo starts from nothing
trap 'edge sim down' EXIT
edge sim up --blank --board esp32 --board esp32c3 --board picow

echo; echo "== On the bench: flash, label, stream over the serial console"
edge flash --all
ids=$(edge flash --all --json | python -c 'import json,sys; print(" ".join(r["device_id"] for r in json.load(sys.stdin)))')
first=${ids%% *}
payloads=""
for id in $ids; do              # each label once: the registry then forgets the code
  payloads="$payloads $(edge label "$id" --json | python -c 'import json,sys; l=json.load(sys.stdin); print(l["payload"]); print("label of", l["device_id"], "->", l["png"], file=sys.stderr)')"
done
edge telemetry ingest --sim --for 5

echo; echo "== In the field: pair each board over BLE with its label's code, then a gateway"
export EDGE_BLE=sim              # the bench's virtual air (on a Raspberry Pi: leave it unset for BlueZ)
edge scan --for 3
for qr in $payloads; do
  edge pair --qr "$qr" --account demo
done
edge devices --account demo
edge gateway run --account demo --for "$SECONDS_TO_RUN"

echo; echo "== A signed update: a new agent for the Pico W, checked and installed by the board itself"
picow=$(for id in $ids; do case $id in picow-*) echo "$id";; esac; done)
edge ota keygen
edge ota bundle --board picow --version 0.2.0 -o "$EDGE_HOME/agent-picow.bundle" >/dev/null
edge ota sign "$EDGE_HOME/agent-picow.bundle" --board picow --component agent --version 0.2.0 --sequence 1 \
  -o "$EDGE_HOME/agent-picow.manifest"
# Over its BLE bond (the gateway has stopped); on the bench, its serial port works too (picow-1).
edge ota push "$picow" "$EDGE_HOME/agent-picow.bundle" "$EDGE_HOME/agent-picow.manifest"

echo; echo "== The real rp2 firmware: an emulated Raspberry Pi Pico on the bench"
if command -v node >/dev/null && command -v npm >/dev/null; then
  edge sim down
  edge emulator build              # once: 1-2 minutes and about 1 GB of packages; cached after
  edge sim up --board pico --emulated --unprovisioned
  edge flash -p pico-1             # its os.urandom is constant: the bench draws its key, and says so
  edge telemetry ingest pico-1 --for 15
else
  echo "skipped: Node.js and npm are not installed (scripts/need-node.sh installs them; docs/emulated-pico.md)"
fi

echo; echo "== Summary"
edge telemetry show
edge ota status --device "$picow"
cat <<EOT

The demo's registry and bench folder are in $EDGE_HOME (not the default
~/.local/share/edge). To look at them again, point edge there:
  export EDGE_HOME=$EDGE_HOME PATH=$PWD/.venv/bin:\$PATH
  edge telemetry show
  edge devices show $first
  edge ota status
  edge telemetry export --format senml-json -o records.json
EOT
