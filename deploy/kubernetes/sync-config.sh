#!/usr/bin/env bash
# Writes configmap.yaml from the shipped config.toml (tests/deploy.rs checks they agree).
set -euo pipefail
cd "$(dirname "$0")"
{
  cat <<'HEAD'
# config.toml as shipped (a test keeps the two equal; regenerate with sync-config.sh);
# environment variables in the StatefulSet override it (HEXDISPATCH__SECTION__KEY).
apiVersion: v1
kind: ConfigMap
metadata:
  name: hexdispatch-config
data:
  config.toml: |
HEAD
  sed -e 's/^\(.\)/    \1/' ../../config.toml
} > configmap.yaml
