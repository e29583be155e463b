#!/usr/bin/env bash
# Install what the toolkit needs on a fresh Debian 12 machine: Debian packages, then the project venv.
# Idempotent: packages already present and an up-to-date venv are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(redis-server postgresql-15 postgresql-client-15 postgresql-15-cron bind9 bind9-utils podman runc
          debootstrap uidmap slirp4netns iproute2 openssh-client sshpass pebble testssl.sh
          prometheus prometheus-alertmanager prometheus-node-exporter prometheus-postgres-exporter
          prometheus-redis-exporter prometheus-bind-exporter prometheus-postfix-exporter postfwd pgbouncer)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # No init system here: Debian's postinst may start daemons on default ports; the devenv runs its own.
  for svc in redis-server named bind9 prometheus prometheus-alertmanager prometheus-node-exporter \
             prometheus-postgres-exporter prometheus-redis-exporter prometheus-bind-exporter \
             prometheus-postfix-exporter postfwd pgbouncer; do service "$svc" stop >/dev/null 2>&1 || true; done
fi
bash tools/configure-podman.sh  # runc + no default ulimits: what podman needs on these machines

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages (pyproject.toml changed or first run)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
