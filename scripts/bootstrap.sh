#!/usr/bin/env bash
# Installs everything rds-backup's local run, tests and benchmark need, on a fresh Debian machine.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pg_dump >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
# the tests build a small security label provider for their PostgreSQL (tests/support/label_provider.py)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The server headers for that provider, from postgresql-server-dev-<major> unpacked into a cache, not
# installed: the package depends on clang and LLVM, hundreds of MB the tests do not need.
pg_major=$(ls -d /usr/lib/postgresql/*/bin/initdb | sed 's#/usr/lib/postgresql/\([0-9]*\)/.*#\1#' | sort -n | tail -1)
headers="${XDG_CACHE_HOME:-$HOME/.cache}/rdsbackup/postgresql-server-dev-$pg_major"
if [ ! -f "/usr/include/postgresql/$pg_major/server/commands/seclabel.h" ] && \
   [ ! -f "$headers/usr/include/postgresql/$pg_major/server/commands/seclabel.h" ]; then
  echo "bootstrap: unpacking postgresql-server-dev-$pg_major's headers into $headers"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  debs=$(mktemp -d)
  (cd "$debs" && chmod 777 . && { apt-get download -qq "postgresql-server-dev-$pg_major" 2>/dev/null ||
    { $SUDO apt-get update -qq && apt-get download -qq "postgresql-server-dev-$pg_major"; }; })
  mkdir -p "$headers" && dpkg-deb -x "$debs"/postgresql-server-dev-*.deb "$headers"
  rm -rf "$debs"
fi
# The Debian package starts a cluster of its own; the tests start their own servers instead.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
    pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
  done
fi

python_stamp=".bootstrap.$(cat requirements.txt requirements-dev.txt lambdas/requirements.txt worker_image/pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$python_stamp" ] || ! python -c "import aws_cdk, moto, rdsbackup" >/dev/null 2>&1; then
  echo "bootstrap: installing Python packages"
  python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  rm -f .bootstrap.* && touch "$python_stamp"
fi

if ! npx --no-install cdk --version >/dev/null 2>&1; then
  echo "bootstrap: installing the AWS CDK CLI (npm)"
  npm install --global --silent --no-fund --no-audit aws-cdk@2.1148.1 >/dev/null 2>&1
fi
