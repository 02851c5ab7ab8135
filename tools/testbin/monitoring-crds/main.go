// Command monitoringcrds builds nothing useful: it pins the Prometheus Operator's API types
// (github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring) in this module, so that
// tools/testbin/build.sh can run controller-gen on them and write the monitoring.coreos.com CRDs
// (ServiceMonitor, PodMonitor, PrometheusRule) that the integration tests install in the real
// kube-apiserver, to validate manifests/components/monitoring against them.
package main

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

func main() {}
