// Command kube-scheduler builds the Kubernetes scheduler from the pinned
// k8s.io/kubernetes module, for Bolina Scaler's integration tests only
// (kwok runs pods only once they are bound to one of its fake nodes).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
