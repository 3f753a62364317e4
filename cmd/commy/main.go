// Command commy is the commy broker and its command-line client.
package main

import (
	"os"

	"github.com/commy/commy/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args)) }
