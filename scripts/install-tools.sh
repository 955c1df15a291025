#!/usr/bin/env bash
# Installs the tools that scripts/check-packaging.sh uses (shellcheck, hadolint), only those still
# missing: the `tools` part of scripts/setup, which says how.
#
#   scripts/install-tools.sh
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/setup" tools
