package cli

import (
	"context"
	"io"
	"os"
	"slices"

	"github.com/commy/commy/internal/paths"
	ucli "github.com/urfave/cli/v2"
)

// App returns the commy command-line application.
func App() *ucli.App {
	app := &ucli.App{
		// ucli.HelpFlag by hand: urfave/cli adds it only along with its own
		// help command, which helpCommand replaces.
		Flags:   []ucli.Flag{socketFlag(), jsonFlag(), trustSocketFlag(), ucli.HelpFlag},
		Name:    "commy",
		Usage:   "same-host IPC broker with a shared-memory fast path",
		Version: versionString(),
		Description: "commy keeps tenants, services and named variables in shared memory and serves them over a\n" +
			"Unix socket. `commy serve` runs the broker; the other commands talk to it.",
		Commands: []*ucli.Command{
			serveCommand(),
			tenantsCommand(), servicesCommand(), varsCommand(),
			getCommand(), setCommand(), watchCommand(), statsCommand(),
			createCommand(), deleteCommand(), remapCommand(), allocCommand(), deallocCommand(),
			auditCommand(), benchCommand(), bridgeCommand(),
			versionCommand(), completionCommand(), helpCommand(),
			manCommand(),
		},
		EnableBashCompletion: true,
		ExitErrHandler:       func(*ucli.Context, error) {},
		// Reached only without a command, or with one that does not exist.
		Action: func(c *ucli.Context) error {
			if c.Args().Present() {
				return usagef("unknown command %q; `commy help` lists the commands", c.Args().First())
			}
			return ucli.ShowAppHelp(c)
		},
		OnUsageError: onUsageError,
	}
	for _, cmd := range app.Commands {
		if !cmd.Hidden && cmd.Name != "version" && cmd.Name != "completion" {
			cmd.Flags = append(cmd.Flags, socketFlag())
			if cmd.Name != "serve" {
				cmd.Flags = append(cmd.Flags, trustSocketFlag())
			}
		}
		if !slices.ContainsFunc(cmd.Flags, func(f ucli.Flag) bool { return slices.Contains(f.Names(), "json") }) {
			cmd.Flags = append(cmd.Flags, jsonFlag()) // for errors, at least
		}
		cmd.OnUsageError = onUsageError
	}
	return app
}

// helpCommand is `commy help [COMMAND]`.
func helpCommand() *ucli.Command {
	return &ucli.Command{
		Name: "help", Aliases: []string{"h"}, Usage: "show the commands, or one command's flags and arguments", ArgsUsage: "[COMMAND]",
		Action: func(c *ucli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			if len(a) == 0 {
				return ucli.ShowAppHelp(c)
			}
			if cmd := c.App.Command(a[0]); cmd == nil || cmd.Hidden {
				return usagef("unknown command %q; `commy help` lists the commands", a[0])
			}
			return ucli.ShowCommandHelp(c.Lineage()[1], a[0]) // the root, whose subcommands are the commands
		},
	}
}

// onUsageError turns urfave/cli's flag errors into usage errors (exit 64).
func onUsageError(c *ucli.Context, err error, _ bool) error {
	return usagef("%v; see `%s --help`", err, fullName(c))
}

// socketFlag is --socket, which commy and every command take: both
// `commy --socket P get ...` and `commy get --socket P ...` work.
func socketFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "socket", Aliases: []string{"s"}, Usage: "broker socket `PATH`", EnvVars: []string{paths.SocketEnv}, DefaultText: paths.SocketHelp}
}

// trustSocketFlag turns off the check that the socket belongs to root or
// the caller, for set-ups where a broker runs as a third user.
func trustSocketFlag() ucli.Flag {
	return &ucli.BoolFlag{Name: "any-socket-owner", Usage: "dial the socket even when it belongs to a user other than root or you"}
}

// anySocketOwner reports whether --any-socket-owner was given at any level.
func anySocketOwner(c *ucli.Context) bool {
	for _, x := range c.Lineage() {
		if x.Bool("any-socket-owner") {
			return true
		}
	}
	return false
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

// Main runs the application and returns the process exit status: 0 on
// success, else the class of the failure (see ExitUsage and the others,
// and docs/cli.md). With --json, errors are JSON on stderr.
func Main(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := App()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	return report(stderr, err, wantsJSON(args))
}

// wantsJSON reports whether --json is among the flags, so that even an
// error in reading the command line is reported as JSON.
func wantsJSON(args []string) bool {
	for _, a := range args[1:] {
		switch a {
		case "--":
			return false
		case "--json", "-json", "--json=true", "-json=true":
			return true
		}
	}
	return false
}
