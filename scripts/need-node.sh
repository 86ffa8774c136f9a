#!/usr/bin/env bash
# The emulated RP2040 runs on Node.js (rp2040js, installed by npm into the
# user cache on first use). `make test-emulated` calls this first: on a fresh
# Debian/Ubuntu machine it installs Debian's nodejs and npm (Node 18 or newer).
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have node && have npm; then
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -ge 18 ]; then exit 0; fi
  echo "need-node: Node $major is too old (18 or newer): upgrade nodejs" >&2
  exit 1
fi
if ! have apt-get; then
  echo "need-node: install Node.js 18+ and npm (no apt-get here to do it)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "need-node: installing nodejs and npm with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
node --version
