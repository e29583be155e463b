#!/usr/bin/env bash
# A pull request's preview: runs `penguinmails preview` once, writes the summary as markdown (to post) and
# JSON (to keep as an artifact), and turns the toolkit's exit codes into a CI verdict:
#   0 no changes, 2 changes        -> the job passes (the summary says what would change)
#   3 a mandatory policy violated   -> the job fails after writing the summary
#   1 (or anything else) an error   -> the job fails
# Usage: ci/preview.sh STACK OUTDIR [more `penguinmails preview` options, e.g. --refresh]
set -uo pipefail
stack="${1:?usage: ci/preview.sh STACK OUTDIR [preview options]}"
out="${2:?usage: ci/preview.sh STACK OUTDIR [preview options]}"
shift 2
cd "$(dirname "$0")/.."
mkdir -p "${out}"
# The pipeline provides PULUMI_BACKEND_URL and PULUMI_CONFIG_PASSPHRASE; tools/env.sh keeps them.
# shellcheck source=/dev/null
source tools/env.sh
penguinmails preview --stack "${stack}" --format markdown --output "${out}/preview.md" \
  --json-output "${out}/preview.json" "$@"
code=$?
echo "${code}" > "${out}/exit-code"
case "${code}" in
  0) echo "ci: ${stack}: no changes" ;;
  2) echo "ci: ${stack}: changes pending (see ${out}/preview.md)"; exit 0 ;;
  3) echo "ci: ${stack}: a mandatory policy is violated (see ${out}/preview.md)" >&2 ;;
  *) echo "ci: ${stack}: the preview failed (exit ${code}); see the job log" >&2 ;;
esac
exit "${code}"
