#!/usr/bin/env bash
# CLI cost of a large (componentize-py) plugin next to the built-in `local`,
# in one run: `status`, `logs`, `submit` (medians, hyperfine) and each
# call's peak RSS (/usr/bin/time -v). Usage:
#   bench.sh HPC_HOST_BINARY DIR_WITH_pyplugin.wasm
set -euo pipefail
bin="$1"; plugdir="$2"
home="$(mktemp -d)"; trap 'rm -rf "$home"' EXIT
mkdir -p "$home/.local/share/hpc-host/plugins"
cp "$plugdir/pyplugin.wasm" "$plugdir/pyplugin.policy.toml" "$home/.local/share/hpc-host/plugins/"
run() { env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin \
  CCAT_WORKFLOW_MANAGER_PLUGINS__PYPLUGIN__SUPERVISE=true "$bin" "$@"; }
export -f run; export home bin
echo "== first compile (pyplugin)"
/usr/bin/time -v env -i HOME="$home" PATH=/usr/bin:/bin "$bin" plugins compile pyplugin 2>&1 \
  | grep -E "compiled|Elapsed|Maximum resident"
for b in local pyplugin; do
  id=$(run --backend "$b" submit -- /bin/sh -c 'echo hi; echo err >&2')
  sleep 1
  echo "== $b: job $id"
  hyperfine -N -w 3 -r 30 --export-json "$home/$b-status.json" \
    "env -i HOME=$home PATH=/usr/bin:/bin CCAT_WORKFLOW_MANAGER_PLUGINS__PYPLUGIN__SUPERVISE=true $bin --backend $b status $id" >/dev/null
  hyperfine -N -w 3 -r 20 --export-json "$home/$b-logs.json" \
    "env -i HOME=$home PATH=/usr/bin:/bin CCAT_WORKFLOW_MANAGER_PLUGINS__PYPLUGIN__SUPERVISE=true $bin --backend $b logs $id" >/dev/null
  hyperfine -N -w 2 -r 10 --export-json "$home/$b-submit.json" \
    "env -i HOME=$home PATH=/usr/bin:/bin CCAT_WORKFLOW_MANAGER_PLUGINS__PYPLUGIN__SUPERVISE=true $bin --backend $b submit -- true" >/dev/null
  for what in status logs submit; do
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f'$b $what median {r[\"median\"]*1e3:.1f} ms (n={len(r[\"times\"])})')" "$home/$b-$what.json"
  done
  for what in "status $id" "logs $id"; do
    rss=$(/usr/bin/time -v env -i HOME="$home" PATH=/usr/bin:/bin CCAT_WORKFLOW_MANAGER_PLUGINS__PYPLUGIN__SUPERVISE=true "$bin" --backend "$b" $what 2>&1 >/dev/null | awk '/Maximum resident/ {print $6}')
    echo "$b ${what%% *} peak RSS ${rss} KiB"
  done
done
