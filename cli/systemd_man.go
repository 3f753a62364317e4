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

// manPage renders App's commands and flags, with sections on files, the
// environment and systemd, as a man page in section 1.
func manPage() ([]byte, error) {
	app := App()
	md, err := app.ToMarkdown()
	if err != nil {
		return nil, fmt.Errorf("man page: %w", err)
	}
	// Usage strings such as "<data-dir>/audit.log" are not HTML.
	md = strings.ReplaceAll(md, "<", `\<`)
	return md2man.Render([]byte("% commy 1\n\n" + md + manExtra)), nil
}

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
