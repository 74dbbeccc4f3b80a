// Command k8s-local is one static binary for the local control plane used by djangoscale's
// end-to-end tests and `djangoscale dev`: kube-apiserver, kube-controller-manager,
// kube-scheduler and an embedded etcd, chosen by the first argument.
//
// One multi-call binary instead of four: the three Kubernetes commands share almost all of
// their packages, so linking them once saves minutes of link time and hundreds of MiB of
// disk on a two-core machine.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // same as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var commands = map[string]func() *cobra.Command{
	"apiserver":          func() *cobra.Command { return apiserver.NewAPIServerCommand() },
	"controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: k8s-local apiserver|controller-manager|scheduler|etcd [flags]")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "etcd" {
		os.Exit(runEtcd(args))
	}
	newCommand, ok := commands[name]
	if !ok {
		usage()
		os.Exit(2)
	}
	command := newCommand()
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}
