#!/usr/bin/env bash
# Installs what sealq's tests need (when missing) and runs every test.
# Used verbatim by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The embedded broker needs nothing: rusqlite builds its own SQLite (bundled).
for bin in cc; do
  command -v "$bin" >/dev/null 2>&1 || need_apt+=(build-essential)
done
# The Redis broker's tests start their own redis-server (TLS, ACL, restarts)
# and use redis-cli; Sentinel tests use redis-sentinel.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
  || ! command -v redis-sentinel >/dev/null 2>&1; then
  need_apt+=(redis-server redis-tools redis-sentinel)
fi
# The Postgres broker's tests start their own server (initdb + postgres in a
# temp dir, as the `postgres` user when run as root): the Debian package
# puts the binaries in /usr/lib/postgresql/VERSION/bin, off PATH.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing test prerequisites: ${need_apt[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# A one-shot run gains nothing from incremental caches (2 GB on a clean
# build); a developer who wants them sets CARGO_INCREMENTAL=1.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
