// Command consul is a thin wrapper that builds the Consul CLI (agent and
// friends) from the MPL-2.0 licensed github.com/hashicorp/consul module,
// for Bolina Scaler's integration tests only.
package main

import (
	"fmt"
	"io"
	"log"
	"os"

	mcli "github.com/mitchellh/cli"

	"github.com/hashicorp/consul/command"
	consulcli "github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
)

func main() {
	// Consul's libraries log through the std logger before their own
	// logger is set up; silence that the same way upstream does.
	log.SetOutput(io.Discard)

	ui := &consulcli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	commands := command.RegisteredCommands(ui)

	app := &mcli.CLI{
		Name:        "consul",
		Args:        os.Args[1:],
		Commands:    commands,
		HelpFunc:    mcli.BasicHelpFunc("consul"),
		HelpWriter:  os.Stdout,
		ErrorWriter: os.Stderr,
	}
	if app.IsVersion() {
		os.Exit(version.New(ui).Run(nil))
	}
	code, err := app.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}
