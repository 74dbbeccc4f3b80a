#!/usr/bin/env bash
# The Prometheus Operator's PodMonitor and ServiceMonitor CRDs from its Go module, cached by
# version, so the e2e tests can dry-run the chart's monitors on the real API server. Prints
# the directory holding them.
set -euo pipefail

exec "$(dirname "$0")/../crds-from-module.sh" prometheus-operator \
  github.com/prometheus-operator/prometheus-operator v0.85.0 \
  monitoring.coreos.com_podmonitors.yaml \
  example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml \
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
