// Command k8s-local is one static binary for the local cluster used by djangoscale's
// end-to-end tests and `djangoscale dev`: kube-apiserver, kube-controller-manager,
// kube-scheduler, an embedded etcd, and the real node's kubelet and kube-proxy, chosen by the
// first argument.
//
// One multi-call binary instead of six: the Kubernetes commands share almost all of their
// packages, so linking them once saves minutes of link time and hundreds of MiB of disk on a
// two-core machine (adding the kubelet and kube-proxy grew it from 116 to 126 MiB).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // same as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var commands = map[string]func() *cobra.Command{
	"apiserver":          func() *cobra.Command { return apiserver.NewAPIServerCommand() },
	"controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":            func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":         func() *cobra.Command { return proxy.NewProxyCommand() },
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: k8s-local apiserver|controller-manager|scheduler|kubelet|kube-proxy|etcd [flags]")
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
