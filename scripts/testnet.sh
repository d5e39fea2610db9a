#!/usr/bin/env bash
# Starts a local testnet of N membrane nodes on loopback (default 3), node 1 as bootstrap,
# each in its own data directory; prints their peer ids and addresses. Ctrl-C stops them.
# Usage: scripts/testnet.sh [N] [more `membrane testnet` flags, e.g. --dir ./net]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-3}"
shift || true
exec cargo run --release --bin membrane -- testnet --nodes "$nodes" "$@"
