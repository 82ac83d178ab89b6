#!/usr/bin/env bash
# The backend's logic under plain pytest against the fake host (no wasm):
# generates the Python bindings of the world into bindings/ and runs tests/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
COMPONENTIZE_PY_VERSION=0.25.1
wit="${HPC_WIT_DIR:-}"
if [ -z "$wit" ]; then
  if [ -d "$here/wit" ]; then wit="$here/wit"; else wit="$here/../../wit"; fi
fi
tools="${HPC_PLUGIN_TOOLS:-$HOME/.cache/hpc-host/plugin-tools}/componentize-py-$COMPONENTIZE_PY_VERSION"
if ! "$tools/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION" 'pytest>=8,<9'
fi
rm -rf "$here/bindings"
"$tools/bin/componentize-py" -d "$wit" -w backend-process bindings "$here/bindings"
cd "$here" && "$tools/bin/python" -m pytest -p no:cacheprovider -q tests "$@"
