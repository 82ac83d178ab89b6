#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs them all.
#   - Redis on 127.0.0.1:6379 (installed with apt-get and started if absent)
#   - python3 (a test job allocates memory with it)
#   - a single-node SLURM 22.05 with slurmdbd/MariaDB accounting
#     (scripts/slurm-testcluster.sh: Debian packages, no systemd)
# Services the tests need are not optional: if one cannot be started, this fails.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[test.sh $(date +%T)] $*" >&2; }

need_pkgs=""
command -v redis-server >/dev/null || need_pkgs="$need_pkgs redis-server"
command -v python3 >/dev/null || need_pkgs="$need_pkgs python3"
# Tests act as another user (`nobody`, through setpriv), who cannot run a
# per-user interpreter (pyenv): they use the system's.
[ -x /usr/bin/python3 ] || need_pkgs="$need_pkgs python3"
# The TLS Redis test makes its certificates with openssl.
command -v openssl >/dev/null || need_pkgs="$need_pkgs openssl"
# The Python package's tests run in a fresh virtual environment.
python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs="$need_pkgs python3-venv"
# The JavaScript plugin template builds with componentize-js from npm.
command -v node >/dev/null || need_pkgs="$need_pkgs nodejs"
command -v npm >/dev/null || need_pkgs="$need_pkgs npm"
if [ -n "$need_pkgs" ]; then
  [ "$(id -u)" = 0 ] || { echo "error: install:$need_pkgs (needs root)" >&2; exit 1; }
  log "installing:$need_pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $need_pkgs >/dev/null
fi

# host/src's folders are layers (ARCHITECTURE.md): every edge between them
# goes down, so there is no cycle either. Seconds; fails before any build.
log "layers: scripts/modedges.py host/src --check"
python3 scripts/modedges.py host/src --check >/dev/null

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile /tmp/hpc-host-test-redis.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
fi

log "starting the SLURM test cluster"
scripts/slurm-testcluster.sh

# rust-toolchain.toml lists the wasm target; make sure rustup has it even
# where it does not install targets on first use.
if ! [ -d "$(rustc --print target-libdir --target wasm32-wasip2 2>/dev/null)" ]; then
  log "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# A build cache shared between checkouts must not hand one checkout's plugins
# to another (see host/build.rs).
export HPC_HOST_CHECKOUT="$PWD"
# Cargo judges a workspace crate fresh by the mtimes of the files its last
# build read, by absolute path: in a build cache last used by another
# checkout (CI's clone, a worktree) that still exists, it would reuse that
# checkout's build of our own crates (and build scripts). So when the
# checkout changes, our crates (not the dependencies) are built again.
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
stamp="$target_dir/.hpc-host-checkout"
if [ -d "$target_dir/release" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$PWD" ]; then
  log "the build cache was last used by another checkout: cleaning this workspace's crates"
  members="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(" ".join("-p " + p["name"] for p in json.load(sys.stdin)["packages"]))')"
  # shellcheck disable=SC2086
  cargo clean --release $members
fi
mkdir -p "$target_dir" && printf '%s\n' "$PWD" >"$stamp"

log "building and testing (release profile: the plugins' compile cache and the benchmarks use it too)"
# The plugins are wasm32-wasip2 cdylibs built by host/build.rs; their native
# unit tests (pure logic) run here too.
cargo test --release --locked -p hpc-host -p hpc-plugin-slurm -p hpc-plugin-kubernetes \
  -p hpc-plugin-sdk -p hpc-plugin-local -p hpc-plugin-template -- --include-ignored
# The benchmarks are not tests, but they must keep building (the bench
# profile inherits release: nothing but the bench binaries links again).
cargo bench --locked -p hpc-host --no-run
# The Python and JavaScript plugin templates: built from PyPI / npm with their
# pinned toolchains, unit-tested against their fake hosts, then loaded under
# least privilege by the binary the tests above built, and run through the
# contract's lifecycle (about 2 minutes, most of it the two builds).
log "plugin templates (Python, JavaScript): build, unit tests, load under least privilege, lifecycle"
scripts/test-plugin-templates.sh "$target_dir/release/hpc-host"
# Lints, as errors (rust-toolchain.toml lists clippy; add it where rustup
# did not install it with the toolchain).
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
log "clippy"
cargo clippy --release --locked -p hpc-host -p hpc-plugin-sdk -p hpc-plugin-local \
  -p hpc-plugin-slurm -p hpc-plugin-kubernetes -p hpc-plugin-template -p hpc-test-plugin-broken \
  --all-targets -- -D warnings

# The Python package (python/), installed the way a user installs it: `pip
# install` builds the wheel with maturin, which runs cargo on the same target
# folder, release profile and --locked as above, into a fresh virtual
# environment. The binary alone is built without dev-dependencies; axum (the
# daemon) is a normal dependency and jiff (the tests') takes k8s-openapi's
# features, so both builds share every dependency and only the binary links
# again. pytest runs from outside the source tree so
# `import hpc_host` is the installed one, with the installed `hpc-host`.
log "the Python package: pip install ./python into a fresh venv, mypy --strict, pytest"
pydir="$(mktemp -d /tmp/hpc-host-py.XXXXXX)"
trap 'rm -rf "$pydir"' EXIT
python3 -m venv "$pydir/venv"
"$pydir/venv/bin/pip" install -q --upgrade pip
# The `psij`, `parsl` and `dask` extras too (the PSI/J executor, the Parsl
# provider, the Dask cluster), and Snakemake's executor plugin (its own
# distribution, built on this package: pip takes `hpc-host` from ./python)
# with Snakemake, whose test base for executor plugins test_snakemake.py runs;
# pytest below 9: Parsl's own tests, which test_parsl.py runs, use a hook
# argument pytest 9 removed.
"$pydir/venv/bin/pip" install -q './python[psij,parsl,dask]' ./python/snakemake-executor-plugin-hpc-host \
  'snakemake>=9,<10' 'pytest>=8,<9' mypy
"$pydir/venv/bin/mypy" --strict --config-file python/pyproject.toml python/src/hpc_host
cp -r python/tests "$pydir/tests"
# pytest exits 5 when it collected no test: that fails here like any other error.
(cd "$pydir" && env -u HPC_HOST_BIN "$pydir/venv/bin/python" -m pytest -p no:cacheprovider -q tests)
