package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/paths"
	"github.com/commy/commy/ipc"
	ucli "github.com/urfave/cli/v2"
)

// App returns the commy command-line application.
func App() *ucli.App {
	app := &ucli.App{
		Flags:   []ucli.Flag{socketFlag()},
		Name:    "commy",
		Usage:   "same-host IPC broker with a shared-memory fast path",
		Version: broker.Version,
		Description: "commy keeps tenants, services and named variables in shared memory and serves them over a\n" +
			"Unix socket. `commy serve` runs the broker; the other commands talk to it.",
		Commands: []*ucli.Command{
			serveCommand(),
			tenantsCommand(), servicesCommand(), varsCommand(),
			getCommand(), setCommand(), watchCommand(), statsCommand(),
			createCommand(), deleteCommand(), allocCommand(), deallocCommand(),
			auditCommand(),
			manCommand(),
		},
		EnableBashCompletion: true,
		ExitErrHandler:       func(*ucli.Context, error) {},
	}
	for _, cmd := range app.Commands {
		if !cmd.Hidden {
			cmd.Flags = append(cmd.Flags, socketFlag())
		}
	}
	return app
}

// socketFlag is --socket, which commy and every command take: both
// `commy --socket P get ...` and `commy get --socket P ...` work.
func socketFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "socket", Aliases: []string{"s"}, Usage: "broker socket `PATH`", EnvVars: []string{paths.SocketEnv}, DefaultText: paths.SocketHelp}
}

// socketOf is the socket path for the command: --socket given on the
// command line (after the command name or before it), else COMMY_SOCKET,
// else the default (paths.Socket).
func socketOf(c *ucli.Context) (string, error) {
	if v, ok := explicitSocket(c); ok {
		return v, nil
	}
	return paths.Socket()
}

// socketSet reports whether a socket was named by --socket or COMMY_SOCKET.
func socketSet(c *ucli.Context) bool {
	_, ok := explicitSocket(c)
	return ok || os.Getenv("COMMY_SOCKET") != ""
}

// explicitSocket finds --socket on the command line. Every level defines the
// flag, and urfave/cli also marks it set from the environment, so a value
// equal to COMMY_SOCKET is taken as coming from there.
func explicitSocket(c *ucli.Context) (string, bool) {
	env, hasEnv := os.LookupEnv("COMMY_SOCKET")
	for _, x := range c.Lineage() {
		if x.IsSet("socket") {
			if v := x.String("socket"); v != "" && (!hasEnv || v != env) {
				return v, true
			}
		}
	}
	return "", false
}

// Main runs the application and returns the process exit code: 0 on success,
// 1 on failure (with the broker's error code on stderr), 2 on bad usage.
func Main(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	app := App()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.Run(args)
	if err == nil {
		return 0
	}
	var re *ipc.RemoteError
	var ue usageError
	switch {
	case errors.As(err, &re):
		fmt.Fprintf(stderr, "commy: %s: %s\n", re.Code, re.Message)
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "commy: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "commy: %v\n", err)
		return 1
	}
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }
