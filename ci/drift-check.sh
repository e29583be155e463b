#!/usr/bin/env bash
# Scheduled drift check: refresh the stack (the mail hosts run their playbook in check mode, every resource
# reads its real state back, the refresh is recorded in the history the audit report reads), then expect no
# changes. A refresh that found drift leaves pending updates, so the preview's exit code 2 fails the job and
# the summary says what drifted; the next `pulumi up` repairs it.
# Usage: ci/drift-check.sh STACK OUTDIR
set -uo pipefail
stack="${1:?usage: ci/drift-check.sh STACK OUTDIR}"
out="${2:?usage: ci/drift-check.sh STACK OUTDIR}"
cd "$(dirname "$0")/.."
mkdir -p "${out}"
# shellcheck source=/dev/null
source tools/env.sh
if ! pulumi refresh --stack "${stack}" --yes --non-interactive --color never > "${out}/refresh.log" 2>&1; then
  tail -n 20 "${out}/refresh.log" >&2
  echo "ci: ${stack}: the refresh failed; see ${out}/refresh.log" >&2
  exit 1
fi
penguinmails preview --stack "${stack}" --format markdown --output "${out}/drift.md" \
  --json-output "${out}/drift.json"
code=$?
echo "${code}" > "${out}/exit-code"
case "${code}" in
  0) echo "ci: ${stack}: no drift, no pending changes" ;;
  2) echo "ci: ${stack}: drift or pending changes (see ${out}/drift.md); run \`pulumi up\` to repair" >&2; exit 2 ;;
  3) echo "ci: ${stack}: a mandatory policy is violated (see ${out}/drift.md)" >&2 ;;
  *) echo "ci: ${stack}: the drift check failed (exit ${code})" >&2 ;;
esac
exit "${code}"
