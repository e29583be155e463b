# Source this file to drive the dev stack by hand:  source tools/env.sh && pulumi preview --stack dev
# It puts the locally built engine and the venv on PATH, selects the file backend in .state/, sets the
# dev-only passphrase, and exports the running devenv services' addresses and admin credentials.
_pm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export PATH="${_pm_root}/.cache/engine/current/bin:${_pm_root}/.venv/bin:${PATH}"
export PULUMI_HOME="${PULUMI_HOME:-${_pm_root}/.state/pulumi-home}"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://${_pm_root}/.state/backend}"
mkdir -p "${_pm_root}/.state/backend" "${_pm_root}/.state/pulumi-home"
# Dev-only passphrase: it protects the dev stack's secrets in .state/ and Pulumi.dev.yaml, nothing else.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-penguinmails-dev-only}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS=true
# Resource operations at once (the engine's default is 4 x cores); see modules/engine.py.
export PULUMI_PARALLEL="${PULUMI_PARALLEL:-64}"
if [ -x "${_pm_root}/.venv/bin/python" ]; then
  eval "$(cd "${_pm_root}" && .venv/bin/python -m devenv env)"
fi
unset _pm_root
