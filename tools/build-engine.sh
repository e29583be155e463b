#!/usr/bin/env bash
# Build the real Pulumi engine offline, from Go modules, into .cache/engine/<version>-<key>/bin:
#   pulumi                         github.com/pulumi/pulumi/pkg/v3/cmd/pulumi            (tools/pulumi-engine)
#   pulumi-language-python         language host, see README "Engine" for the version    (tools/pulumi-language-python)
#   pulumi-language-python-exec    copied from the sdk/v3 module in the Go module cache
#   pulumi-resource-pulumi-python  our own dynamic-provider shim (tools/pulumi-resource-pulumi-python)
#   pulumi-language-penguinmails-policy  our policy-pack host shim (tools/policy-host/, README "Policy pack")
# The key hashes the Go wrapper modules and the build recipe (version, flags), so a warm run rebuilds
# nothing; the shim is not part of the key: it is (re)installed on every run, which costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PULUMI_VERSION=v3.274.1
LDFLAGS="-w -s -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${PULUMI_VERSION}"
RECIPE="go build -tags osusergo,grpcnotrace ${LDFLAGS}; exec copied from sdk/v3"
key=$( (cat tools/pulumi-engine/go.mod tools/pulumi-engine/go.sum tools/pulumi-language-python/go.mod \
          tools/pulumi-language-python/go.sum; echo "${RECIPE}") | sha256sum | cut -c1-12)
name="${PULUMI_VERSION}-${key}"
dest=".cache/engine/${name}"

install_shim() {
  cmp -s tools/pulumi-resource-pulumi-python "${dest}/bin/pulumi-resource-pulumi-python" ||
    install -m 0755 tools/pulumi-resource-pulumi-python "${dest}/bin/pulumi-resource-pulumi-python"
  cmp -s tools/policy-host/pulumi-language-penguinmails-policy "${dest}/bin/pulumi-language-penguinmails-policy" ||
    install -m 0755 tools/policy-host/pulumi-language-penguinmails-policy "${dest}/bin/pulumi-language-penguinmails-policy"
}

if [ -f "${dest}/.complete" ]; then
  install_shim
  ln -sfn "${name}" .cache/engine/current
  echo "engine: ${PULUMI_VERSION} cached in ${dest}/bin (nothing to build)"
  exit 0
fi

command -v go >/dev/null || { echo "engine: Go is required to build the Pulumi engine" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
start=$(date +%s)
mkdir -p "${dest}/bin"
echo "engine: building pulumi ${PULUMI_VERSION} (cold: several minutes on 2 cores)"
(cd tools/pulumi-engine && go build -tags osusergo,grpcnotrace -ldflags "${LDFLAGS}" \
   -o "../../${dest}/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
echo "engine: building pulumi-language-python"
(cd tools/pulumi-language-python && go build -tags osusergo,grpcnotrace -ldflags "${LDFLAGS}" \
   -o "../../${dest}/bin/pulumi-language-python" github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python)

sdk_dir=$(cd tools/pulumi-engine && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "${sdk_dir}/python/cmd/pulumi-language-python-exec" "${dest}/bin/pulumi-language-python-exec"
install_shim

version=$("${dest}/bin/pulumi" version)
[ "${version}" = "${PULUMI_VERSION}" ] || { echo "engine: built pulumi reports '${version}'" >&2; exit 1; }
echo "$(( $(date +%s) - start ))" > "${dest}/build-seconds"
touch "${dest}/.complete"
ln -sfn "${name}" .cache/engine/current
echo "engine: built ${PULUMI_VERSION} in $(cat "${dest}/build-seconds") s into ${dest}/bin"
