#!/usr/bin/env bash
# Build the Python and JavaScript plugin templates from PyPI / npm, run their
# fake-host unit tests, install them in a plugins folder under least
# privilege, and run the contract's lifecycle through the real binary, in
# process and through the daemon.
#
#   scripts/test-plugin-templates.sh HPC_HOST_BIN [WORK_DIR]
#
# WORK_DIR (default: a temporary folder, removed at the end) keeps the built
# plugins in WORK_DIR/plugins (template-py.wasm, template-js.wasm and their
# .policy.toml) for later checks: the conformance kit, the benchmarks
# (scripts/bench-plugin-templates.py). With HPC_TEMPLATES_PREBUILT=1 and a
# WORK_DIR that has them, the builds are reused (to iterate on the checks).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="$(realpath "${1:?usage: test-plugin-templates.sh HPC_HOST_BIN [WORK_DIR]}")"
[ -x "$bin" ] || { echo "error: $bin is not an executable" >&2; exit 1; }
log() { echo "[templates $(date +%T)] $*" >&2; }
fail() { echo "FAIL: $*" >&2; exit 1; }

if [ -n "${2:-}" ]; then
  work="$2"; mkdir -p "$work"
else
  work="$(mktemp -d /tmp/hpc-host-templates.XXXXXX)"
fi
chmod 700 "$work"
plugins="$work/plugins"
daemon=""
cleanup_daemon() { [ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true; }
keep="${2:-}"
trap 'cleanup_daemon; [ -n "$keep" ] || rm -rf "$work"' EXIT
mkdir -p "$plugins" && chmod 700 "$plugins"

# The unit tests first (no wasm): they fail fast and cost a second.
log "template-py: pytest against the fake host"
plugins/template-py/test.sh
log "template-js: node --test against the fake host"
(cd plugins/template-js && { npm ls --all >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; } && node --test test/)

for lang in py js; do
  if [ -n "${HPC_TEMPLATES_PREBUILT:-}" ] && [ -f "$plugins/template-$lang.wasm" ]; then
    log "template-$lang: using the build in $plugins (HPC_TEMPLATES_PREBUILT)"; continue
  fi
  log "template-$lang: build"
  start=$(date +%s.%N)
  "plugins/template-$lang/build.sh" "$plugins"
  log "template-$lang: built in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
done

# Least privilege: each template may start supervised jobs, and nothing else
# (no programs, no Kubernetes namespace).
write_settings() { # $1: "grant" or "none"
  local grant=""
  [ "$1" = grant ] && grant="supervise = true"
  cat > "$work/settings.toml" <<TOML
[default]
HPC_BACKEND = "template-py"
HPC_PLUGINS_DIR = "$plugins"
HPC_STATE_DIR = "$work/state"
HPC_CACHE_DIR = "$work/cache"
HPC_SOCKET = "$work/hpc-host.sock"
HPC_DAEMON = "never"

[default.plugins.template-py]
$grant
k8s_namespaces = []

[default.plugins.template-js]
$grant
k8s_namespaces = []
TOML
}
export HPC_HOST_CONFIG="$work/settings.toml"
unset HPC_BACKEND CCAT_WORKFLOW_MANAGER_HPC_BACKEND HPC_REDIS_URL || true

# json EXPR: evaluate a Python expression over the JSON on stdin (`j`).
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print(($1))"; }
# run EXPECTED_EXIT CMD...: the command's stdout; fails on another exit code.
run() {
  local want=$1; shift
  local out rc=0
  out="$("$bin" "$@" 2>"$work/stderr")" || rc=$?
  if [ "$rc" != "$want" ]; then
    echo "--- stderr:" >&2; cat "$work/stderr" >&2
    fail "hpc-host $* exited $rc, expected $want"
  fi
  printf '%s' "$out"
}
eq() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }

write_settings none
for p in template-py template-js; do
  log "$p: without a grant, its request is refused; without a request, its process import"
  run 4 --backend "$p" status 00000000-0000-4000-8000-000000000000 >/dev/null
  grep -q "plugins.$p.supervise" "$work/stderr" || { cat "$work/stderr" >&2; fail "$p: refusal does not name the grant"; }
  mv "$plugins/$p.policy.toml" "$work/$p.policy.toml"
  run 4 --backend "$p" status 00000000-0000-4000-8000-000000000000 >/dev/null
  grep -q "imports \`ccat:hpc/process@0.1.0\`, which its policy does not grant" "$work/stderr" ||
    { cat "$work/stderr" >&2; fail "$p: refusal does not name its process import"; }
  mv "$work/$p.policy.toml" "$plugins/$p.policy.toml"
done

write_settings grant
for p in template-py template-js; do
  log "$p: plugins inspect"
  out="$(run 0 --output json plugins inspect "$plugins/$p.wasm")"
  imports="$(printf '%s' "$out" | json '" ".join(sorted(i for i in j["imports"] if i.startswith("ccat:hpc/")))')"
  eq "$imports" "ccat:hpc/kv@0.1.0 ccat:hpc/process@0.1.0 ccat:hpc/types@0.1.0 ccat:hpc/types@0.2.0" "$p imports"
  eq "$(printf '%s' "$out" | json 'j["contract"]')" "0.3.0" "$p contract"

  log "$p: plugins compile (the load checks above compiled it already)"
  run 0 --backend "$p" plugins compile "$p" >/dev/null

  H=(--backend "$p" --output json)
  log "$p: submit / wait / status / logs"
  ok="$(run 0 -v "${H[@]}" submit -- /bin/sh -c 'echo to-stdout; echo to-stderr >&2' | json 'j["job_id"]')"
  # The helper's log goes through wasi:logging, tagged with the plugin.
  grep -q "submitted $ok: /bin/sh plugin=\"$p\"" "$work/stderr" || { cat "$work/stderr" >&2; fail "$p: no log line"; }
  run 0 "${H[@]}" wait "$ok" --timeout 60 >/dev/null
  st="$(run 0 "${H[@]}" status "$ok")"
  eq "$(printf '%s' "$st" | json 'j["status"], j["exit_code"], j["native_state"]')" "('completed', 0, 'COMPLETED')" "$p ok job"
  printf '%s' "$st" | json 'j["wall_time_seconds"] >= 0 and j["cpu_hours"] is not None' | grep -qx True || fail "$p: no metrics: $st"
  logs="$(run 0 "${H[@]}" logs "$ok")"
  eq "$(printf '%s' "$logs" | json 'j["stdout"], j["stderr"]')" "('to-stdout\\n', 'to-stderr\\n')" "$p logs"

  log "$p: a failing job"
  bad="$(run 0 "${H[@]}" submit -- /bin/sh -c 'exit 3' | json 'j["job_id"]')"
  run 0 "${H[@]}" wait "$bad" --timeout 60 >/dev/null
  eq "$(run 0 "${H[@]}" status "$bad" | json 'j["status"], j["exit_code"], j["reason"]')" "('failed', 3, 'exit code 3')" "$p exit 3"

  log "$p: cancel a running job, then cancel it again"
  long="$(run 0 "${H[@]}" submit -- sleep 300 | json 'j["job_id"]')"
  eq "$(run 0 "${H[@]}" status "$long" | json 'j["status"]')" "running" "$p sleep"
  run 0 "${H[@]}" cancel "$long" >/dev/null
  run 0 "${H[@]}" wait "$long" --timeout 30 >/dev/null
  eq "$(run 0 "${H[@]}" status "$long" | json 'j["status"], j["native_state"]')" "('failed', 'CANCELLED')" "$p cancelled"
  run 0 "${H[@]}" cancel "$long" >/dev/null   # an ended job: no error

  log "$p: unknown ids are not-found, in order among known ones"
  unknown=5d0c6b1e-0000-4000-8000-000000000000
  run 3 "${H[@]}" status "$unknown" >/dev/null
  grep -qi "not.found" "$work/stderr" || { cat "$work/stderr" >&2; fail "$p: unknown id not not-found"; }
  run 3 "${H[@]}" logs "not-an-id" >/dev/null
  run 3 "${H[@]}" cancel "$unknown" >/dev/null
  many="$(run 3 "${H[@]}" status "$bad" "$unknown" "$ok")"
  eq "$(printf '%s' "$many" | json '[(x["job_id"], x["status"], (x.get("error") or {}).get("kind")) for x in j]')" \
     "[('$bad', 'failed', None), ('$unknown', None, 'not-found'), ('$ok', 'completed', None)]" "$p statuses"

  log "$p: a time limit"
  slow="$(run 0 "${H[@]}" submit --time-hours 0.0003 -- sleep 60 | json 'j["job_id"]')"   # 1.08 h/1000 -> 2 s
  run 0 "${H[@]}" wait "$slow" --timeout 30 >/dev/null
  eq "$(run 0 "${H[@]}" status "$slow" | json 'j["status"], j["native_state"], j["reason"]')" \
     "('failed', 'TIMEOUT', 'time limit reached')" "$p time limit"

  log "$p: keyed submits make one job; find-job finds it"
  key="templates-$p-$$-$(date +%s%N)"
  jobs_before="$(find "$work/state/jobs/$p" -mindepth 1 -maxdepth 1 -type d | wc -l)"
  k1="$(run 0 "${H[@]}" submit --idempotency-key "$key" -- true | json 'j["job_id"]')"
  k2="$(run 0 "${H[@]}" submit --idempotency-key "$key" -- true | json 'j["job_id"]')"
  eq "$k2" "$k1" "$p keyed submit"
  eq "$(run 0 "${H[@]}" find --idempotency-key "$key" | json 'j["state"], j["job_id"]')" "('made', '$k1')" "$p find"
  eq "$(run 3 "${H[@]}" find --idempotency-key "never-$key" | json 'j["state"]')" "never-made" "$p find unknown"
  jobs_after="$(find "$work/state/jobs/$p" -mindepth 1 -maxdepth 1 -type d | wc -l)"
  eq "$((jobs_after - jobs_before))" "1" "$p job folders made by two keyed submits"

  log "$p: an invalid spec is refused"
  run 2 "${H[@]}" submit -- "" >/dev/null
done

# The conformance kit (`hpc-host plugins test`), as a site's CI would run it
# on its own plugin: every promise of the contract, under the real policy.
for p in template-py template-js; do
  log "$p: the conformance kit"
  "$bin" plugins test "$p" --junit "$work/$p-kit.xml" >"$work/$p-kit.txt" 2>&1 ||
    { cat "$work/$p-kit.txt" >&2; fail "$p: the conformance kit failed"; }
  cat "$work/$p-kit.txt" >&2
  grep -q 'failures="0"' "$work/$p-kit.xml" || { cat "$work/$p-kit.xml" >&2; fail "$p: kit JUnit report"; }
done

# The worlds: a componentize-py plugin that calls nothing imports all of
# its world, and loads exactly when a Rust plugin importing the same
# interfaces would.
worlds="$work/worlds"
mkdir -p "$worlds" && chmod 700 "$worlds"
tools="${HPC_PLUGIN_TOOLS:-$HOME/.cache/hpc-host/plugin-tools}/componentize-py-0.25.1"
for w in backend-kv backend-kube hpc-plugin; do
  if [ -z "${HPC_TEMPLATES_PREBUILT:-}" ] || ! [ -f "$worlds/probe-$w.wasm" ]; then
    log "world $w: build the probe"
    "$tools/bin/componentize-py" -d "$root/wit" -w "$w" componentize -p "$root/tests/plugins/world-probe-py" probe \
      -o "$worlds/probe-$w.wasm" >/dev/null
  fi
done
probe_settings() { # $1: extra settings lines
  cat > "$work/worlds.toml" <<TOML
[default]
HPC_PLUGINS_DIR = "$worlds"
HPC_STATE_DIR = "$work/state"
HPC_CACHE_DIR = "$work/cache"
HPC_DAEMON = "never"
$1
TOML
}
W=(--config "$work/worlds.toml" --output json)
probe_settings ""
log "world backend-kv: loads with no grant at all"
run 3 "${W[@]}" --backend probe-backend-kv status nope >/dev/null
grep -q "not-found" "$work/stderr" || { cat "$work/stderr" >&2; fail "backend-kv probe did not answer"; }
log "world backend-kube: refused for kube without k8s_namespaces; loads with them"
run 4 "${W[@]}" --backend probe-backend-kube status nope >/dev/null
grep -q "imports \`ccat:hpc/kube@0.1.0\`, which its policy does not grant (set \`plugins.probe-backend-kube.k8s_namespaces\`)" "$work/stderr" ||
  { cat "$work/stderr" >&2; fail "backend-kube probe: not refused for kube"; }
probe_settings "[default.plugins.probe-backend-kube]
k8s_namespaces = [\"ccat\"]
[default.plugins.probe-hpc-plugin]
supervise = true"
run 3 "${W[@]}" --backend probe-backend-kube status nope >/dev/null
log "world hpc-plugin: a whole-world build imports kube too, and is refused for it"
run 4 "${W[@]}" --backend probe-hpc-plugin status nope >/dev/null
grep -q "imports \`ccat:hpc/kube@0.1.0\`" "$work/stderr" || { cat "$work/stderr" >&2; fail "hpc-plugin probe: not refused for kube"; }

log "through the daemon"
sed -i 's/HPC_DAEMON = "never"/HPC_DAEMON = "require"/' "$work/settings.toml"
"$bin" serve >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$work/hpc-host.sock" ] && break; sleep 0.1; done
for p in template-py template-js; do
  H=(--backend "$p" --output json)
  id="$(run 0 "${H[@]}" submit -- /bin/echo through-the-daemon | json 'j["job_id"]')"
  run 0 "${H[@]}" wait "$id" --timeout 60 >/dev/null
  eq "$(run 0 "${H[@]}" status "$id" | json 'j["status"]')" "completed" "$p via daemon"
  eq "$(run 0 "${H[@]}" logs "$id" | json 'j["stdout"]')" "through-the-daemon" "$p logs via daemon"
done
kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
log "ok: both templates build, load under least privilege and keep the contract"
