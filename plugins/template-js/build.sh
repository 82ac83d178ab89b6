#!/usr/bin/env bash
# Build the plugin: build.sh OUTDIR [NAME]
#   writes OUTDIR/NAME.wasm and OUTDIR/NAME.policy.toml (NAME: template-js).
# Installs the pinned componentize-js from npm (package-lock.json) into
# node_modules here, and reads the contract from HPC_WIT_DIR (default: ./wit
# if this folder has one, else the repository's wit/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUTDIR [NAME]}"
name="${2:-template-js}"
wit="${HPC_WIT_DIR:-}"
if [ -z "$wit" ]; then
  if [ -d "$here/wit" ]; then wit="$here/wit"; else wit="$here/../../wit"; fi
fi
cd "$here"
# `npm ls` fails when node_modules misses anything the lock file names (a
# half-finished install); then install again, exactly as locked.
if ! grep -q '"version": "0.23.0"' node_modules/@bytecodealliance/componentize-js/package.json 2>/dev/null ||
   ! npm ls --all >/dev/null 2>&1; then
  echo "build.sh: npm ci (componentize-js 0.23.0)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p "$out"
node build.mjs "$out/$name.wasm" "$wit"
cp policy.toml "$out/$name.policy.toml"
echo "build.sh: $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes), world backend-process" >&2
