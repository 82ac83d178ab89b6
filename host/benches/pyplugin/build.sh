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
mkdir -p "$work/wit/deps" "$out"
cp "$root"/wit/backend.wit "$root"/wit/types.wit "$work/wit/"
cp -r "$root"/wit/deps/* "$work/wit/deps/"
# A world importing only what the plugin uses (componentize-py imports
# every interface of the world it is built for).
cat > "$work/wit/world.wit" <<'WIT'
package ccat:hpc@0.2.0;

world py-backend {
    import ccat:hpc/process@0.1.0;
    import ccat:hpc/kv@0.1.0;
    import wasi:config/store@0.2.0-rc.1;
    import wasi:logging/logging@0.1.0-draft;
    export hpc-backend;
}
WIT
cp "$here/app.py" "$work/"
(cd "$work" && "$cpy" -d wit -w py-backend componentize app -o "$out/pyplugin.wasm")
cp "$here/policy.toml" "$out/pyplugin.policy.toml"
chmod 644 "$out/pyplugin.wasm" "$out/pyplugin.policy.toml"
ls -l "$out/pyplugin.wasm"
