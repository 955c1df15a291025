#!/usr/bin/env bash
# Checks the operator's generated artefacts, from the repository root:
#   1. crds/shop.yaml is exactly what `crdgen` generates from the types;
#   2. every crds/examples/*.yaml validates against that CRD, and the objects the operator makes
#      from it validate strictly against the Kubernetes schemas (../shared/tools/k8s-validate).
# The operator's unit and mocked-API tests run with the workspace tests (cargo nextest/test).
# Honours an already-set CARGO_TARGET_DIR; the binaries are built once (`cargo run` then finds
# them current).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
validate=${K8S_VALIDATE:-../shared/tools/k8s-validate}

cargo build -q -p souk-operator --bins
crdgen() { cargo run -q -p souk-operator --bin crdgen; }
operator() { cargo run -q -p souk-operator --bin souk-operator -- "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "check-operator: crds/shop.yaml is current"
crdgen >"$work/shop.yaml"
if ! diff -u crds/shop.yaml "$work/shop.yaml"; then
    echo "check-operator: crds/shop.yaml is stale; run: cargo run -q -p souk-operator --bin crdgen > crds/shop.yaml" >&2
    exit 1
fi

status=0
for example in crds/examples/*.yaml; do
    name=$(basename "$example" .yaml)
    rendered="$work/$name.rendered.yaml"
    echo "check-operator: $example"
    operator render "$example" >"$rendered"
    if ! "$validate" --crds crds --cr "$example" --manifests "$rendered"; then
        echo "check-operator: $example (or the objects made from it) failed validation" >&2
        status=1
    fi
done
exit "$status"
