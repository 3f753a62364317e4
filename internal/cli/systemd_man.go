package cli

import (
	"fmt"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	ucli "github.com/urfave/cli/v2"
)

// manCommand prints the commy(1) man page in troff, generated from the
// command line; `make man` and `make install` use it. It is hidden.
func manCommand() *ucli.Command {
	return &ucli.Command{
		Name:   "man",
		Usage:  "print the commy(1) man page (troff)",
		Hidden: true,
		Action: func(c *ucli.Context) error {
			page, err := manPage()
			if err != nil {
				return err
			}
			_, err = c.App.Writer.Write(page)
			return err
		},
	}
}

// manPage renders commy(1) in troff: a synopsis with every command's
// argument forms, the global options once, each command with its own flags,
// the exit statuses and examples, then files, the environment and systemd.
func manPage() ([]byte, error) {
	app := App()
	var b strings.Builder
	b.WriteString("% commy 1\n\n# NAME\n\ncommy - " + app.Usage + "\n\n# SYNOPSIS\n\n")
	b.WriteString("**commy** [**--socket** *PATH*] [**--json**] *COMMAND* [*FLAGS*] [*ARGUMENTS*]\n\n")
	for _, cmd := range app.Commands {
		if cmd.Hidden {
			continue
		}
		fmt.Fprintf(&b, "**commy %s** [*FLAGS*] %s  \n", cmd.Name, manArgs(cmd.ArgsUsage))
	}
	b.WriteString("**commy --version**\n\n# DESCRIPTION\n\n" + app.Description + "\n\n" + manConventions)
	b.WriteString("\n# GLOBAL OPTIONS\n\nThese are accepted before the command name and, except **--version**, after it too.\n\n")
	for _, f := range app.Flags {
		if f.Names()[0] != "help" {
			manFlag(&b, f)
		}
	}
	b.WriteString("**--version**, **-v**\n: Print the version, commit, protocol version and Go version.\n\n")
	b.WriteString("**--help**, **-h**\n: Print help; after a command, that command's.\n\n# COMMANDS\n\n")
	for _, cmd := range app.Commands {
		if cmd.Hidden {
			continue
		}
		fmt.Fprintf(&b, "## commy %s %s\n\n%s.", cmd.Name, manArgs(cmd.ArgsUsage), upperFirst(cmd.Usage))
		if cmd.Description != "" {
			b.WriteString(" " + cmd.Description)
		}
		b.WriteString("\n\n")
		for _, f := range cmd.Flags {
			if n := f.Names()[0]; n != "socket" && n != "json" && n != "help" {
				manFlag(&b, f)
			}
		}
	}
	b.WriteString(manStatus + manExtra)
	// Usage strings such as "<data-dir>/audit.log" are not HTML.
	md := strings.ReplaceAll(b.String(), "<", `\<`)
	return md2man.Render([]byte(md)), nil
}

// manArgs sets an ArgsUsage such as "TENANT/SERVICE [VARIABLE...]" in italics.
func manArgs(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		if w != "|" && w != "[" && w != "]" {
			f[i] = "*" + strings.NewReplacer("[", "\\[", "]", "\\]").Replace(w) + "*"
		}
	}
	return strings.Join(f, " ")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func manFlag(b *strings.Builder, f ucli.Flag) {
	names := f.Names()
	var parts []string
	for _, n := range names {
		if len(n) == 1 {
			parts = append(parts, "**-"+n+"**")
		} else {
			parts = append(parts, "**--"+n+"**")
		}
	}
	head := strings.Join(parts, ", ")
	usage := ""
	if d, ok := f.(ucli.DocGenerationFlag); ok {
		usage = d.GetUsage()
		if d.TakesValue() {
			arg := "VALUE"
			if i := strings.Index(usage, "`"); i >= 0 {
				if j := strings.Index(usage[i+1:], "`"); j >= 0 {
					arg = usage[i+1 : i+1+j]
					usage = usage[:i] + arg + usage[i+2+j:]
				}
			}
			head += " *" + arg + "*"
			def := d.GetDefaultText()
			if def == "" {
				def = d.GetValue()
			}
			if def != "" && def != `""` && def != "0" {
				usage += " (default: " + def + ")"
			}
		}
		if env := d.GetEnvVars(); len(env) > 0 {
			usage += "; environment: " + strings.Join(env, ", ")
		}
	}
	fmt.Fprintf(b, "%s\n: %s\n\n", head, upperFirst(usage))
}

const manConventions = `Flags go before the arguments: **commy get --json acme/orders count**, not
**commy get acme/orders count --json**, which is refused. Missing and extra arguments are refused. Services are
named *TENANT/SERVICE*. With **--json** every command prints JSON on standard output with the protocol's
snake_case names, and errors as one JSON line on standard error with **error_code** and **message**;
*docs/cli.md* in the source tree lists every command's fields.

Values print, by default, as double-quoted text when they are printable UTF-8 and as **hex:** and hex digits
otherwise, so that text and bytes never look alike; **--format text|hex|base64|raw** chooses. **set** and **alloc**
read *VALUE* as text, or as **--format hex** or **base64**; *VALUE* **-** reads standard input.
`

const manStatus = `
# EXIT STATUS

The same for every command, in the spirit of sysexits.h:

**0**
: Success.

**1**
: Any other failure, such as **commy serve** failing to start.

**64**
: Usage: an unknown command or flag, missing or extra arguments, a flag after an argument.

**65**
: Invalid input: INVALID_NAME, INVALID_REQUEST, INVALID_SERVICE_ID, a *VALUE* that does not decode.

**66**
: Not found: TENANT_NOT_FOUND, SERVICE_NOT_FOUND, VARIABLE_NOT_FOUND, FILE_NOT_FOUND; **watch** when its service
is deleted.

**69**
: The broker is unreachable: no socket at the path, nothing listening, not a socket, or the connection was lost.

**70**
: Internal: INTERNAL_ERROR, PROTOCOL_ERROR, UNKNOWN_MESSAGE; damaged data: SERVICE_DAMAGED.

**73**
: Conflict: ALREADY_EXISTS.

**75**
: A limit: VALUE_TOO_LARGE, NO_SPACE, FRAME_TOO_LARGE, QUOTA_EXCEEDED.

**77**
: Permission: PERMISSION_DENIED, HYBRID_ACCESS_DENIED, no access to the socket or the audit log.

# EXAMPLES

Run a broker for this user in the foreground:

    commy serve

Create a service with one variable, write it and read it back:

    commy create acme
    commy create acme/orders
    commy alloc acme/orders count 0
    commy set acme/orders count 42
    commy get acme/orders count

Write bytes given in hex, and read them as base64 in JSON:

    commy set --format hex acme/orders blob 0001ff
    commy get --json acme/orders blob

Print every change to a service until Ctrl-C:

    commy watch acme/orders

Follow the audit log:

    sudo commy audit -f
`

const manExtra = `
# ENVIRONMENT

**COMMY_SOCKET**, **COMMY_DATA_DIR**
: Defaults for **--socket** and **serve --data-dir**.

**LISTEN_PID**, **LISTEN_FDS**, **LISTEN_FDNAMES**
: Set by systemd for a socket-activated **commy serve** (sd_listen_fds(3)). It serves every passed socket, which
must be a listening AF_UNIX stream socket, and ignores **--socket**. A malformed set, or one meant for another
process, is an error.

**NOTIFY_SOCKET**, **WATCHDOG_USEC**, **WATCHDOG_PID**
: Set by systemd for Type=notify units. **commy serve** sends READY=1 once it accepts connections,
RELOADING=1 and READY=1 around a SIGHUP policy reload, STATUS= with its counts every 10 seconds, STOPPING=1
on shutdown, and WATCHDOG=1 at half of WATCHDOG_USEC (sd_notify(3)).

# SIGNALS

**SIGTERM**, **SIGINT**
: **commy serve** stops accepting, finishes in-flight requests and exits.

**SIGHUP**
: **commy serve** reloads the **--policy** file; a broken file keeps the previous policy and logs why.

**SIGUSR1**
: **commy serve** reopens the audit log at its path, after logrotate moved it.

# FILES

*/run/commy/commy.sock*
: The socket of the commy.socket unit, and root's default socket.

*/var/lib/commy*
: The data directory of the commy.service unit: service files (file backend) and *audit.log*.

*commy.socket*, *commy.service*
: systemd units installed with the binary; see *docs/operations.md* in the source tree.

# SEE ALSO

systemd.socket(5), systemd.service(5), sd_notify(3), sd_listen_fds(3)
`
