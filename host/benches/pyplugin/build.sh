#!/usr/bin/env bash
# Build the benchmark's Python plugin: pyplugin.wasm (+ pyplugin.policy.toml)
# into $1 (default: target/pyplugin). Needs componentize-py 0.25.1:
#   python3 -m venv venv && venv/bin/pip install componentize-py==0.25.1
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/pyplugin}"
cpy="${COMPONENTIZE_PY:-componentize-py}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
# The 0.2.0 `backend-process` world (frozen in wit/deps): process and kv
# only (componentize-py imports every interface of its world), and a
# plugin of an older contract, which the host still loads.
cp "$here/app.py" "$work/"
(cd "$work" && "$cpy" -d "$root/wit" -w ccat:hpc/backend-process@0.2.0 componentize app -o "$out/pyplugin.wasm")
cp "$here/policy.toml" "$out/pyplugin.policy.toml"
chmod 644 "$out/pyplugin.wasm" "$out/pyplugin.policy.toml"
ls -l "$out/pyplugin.wasm"
