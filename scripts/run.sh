#!/usr/bin/env bash
# Command 1: install what tete needs, fetch the default models, build in
# release and start the server on the embedded defaults. Extra arguments go
# to `tete serve` (e.g. --bind 127.0.0.1:9000 --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

scripts/setup-system.sh
cargo build --release --locked -p tete-server
target/release/tete models fetch
target/release/tete models list
exec target/release/tete serve "$@"
