#!/usr/bin/env bash
# Refresh the third-party WIT under wit/deps from the crates that implement it
# on the host side, so the guest and the host always agree on the text.
#   wasi:config  <- wasmtime-wasi-config (same version as the host's wasmtime)
#   wasi:logging <- written here: no host crate ships it; the interface is the
#                   wasi-logging proposal's 0.1.0-draft text.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^wasmtime-wasi-config = "\(.*\)"/\1/p' Cargo.toml)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasmtime-wasi-config-"$version" | head -1)
[ -d "$src" ] || { echo "error: run \`cargo fetch\` first: no wasmtime-wasi-config-$version source" >&2; exit 1; }
rm -rf wit/deps/config && mkdir -p wit/deps/config
cp "$src"/wit/deps/config/*.wit wit/deps/config/
echo "vendored wasi:config from $src"
