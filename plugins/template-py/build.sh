#!/usr/bin/env bash
# Build the plugin: build.sh OUTDIR [NAME]
#   writes OUTDIR/NAME.wasm and OUTDIR/NAME.policy.toml (NAME: template-py).
# Installs the pinned toolchain from PyPI into a virtual environment once
# (HPC_PLUGIN_TOOLS, default ~/.cache/hpc-host/plugin-tools), and reads the
# contract from HPC_WIT_DIR (default: ./wit if this folder has one, else the
# repository's wit/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUTDIR [NAME]}"
name="${2:-template-py}"
WORLD=backend-process
COMPONENTIZE_PY_VERSION=0.25.1

wit="${HPC_WIT_DIR:-}"
if [ -z "$wit" ]; then
  if [ -d "$here/wit" ]; then wit="$here/wit"; else wit="$here/../../wit"; fi
fi
tools="${HPC_PLUGIN_TOOLS:-$HOME/.cache/hpc-host/plugin-tools}/componentize-py-$COMPONENTIZE_PY_VERSION"
if ! "$tools/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
  echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION and pytest into $tools" >&2
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION" 'pytest>=8,<9'
fi
mkdir -p "$out"
# Only the standard library and pure-Python packages bundle: put them in
# src/ (or add their site-packages folder with another -p).
"$tools/bin/componentize-py" -d "$wit" -w "$WORLD" componentize -p "$here/src" app \
  -o "$out/$name.wasm.tmp"
mv "$out/$name.wasm.tmp" "$out/$name.wasm"
cp "$here/policy.toml" "$out/$name.policy.toml"
echo "build.sh: $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes), world $WORLD" >&2
