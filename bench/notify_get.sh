#!/usr/bin/env bash
# im.notify.get latency at 10k and 1M stored notifications, over HTTP, in release mode.
# Extra arguments go to the benchmark: --rows 10000,100000,1000000 --requests 500
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins --example notify_get
exec target/release/examples/notify_get "$@"
