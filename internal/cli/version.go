package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	ucli "github.com/urfave/cli/v2"
)

// commit is the source revision, stamped at build time:
//
//	go build -ldflags "-X github.com/commy/commy/internal/cli.commit=$(git rev-parse HEAD)"
//
// (the version goes into broker.Version the same way). Unstamped, it is the
// revision the go command recorded, if any.
var commit = ""

// versionInfo is what `commy version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Protocol  uint64 `json:"protocol"`
	GoVersion string `json:"go_version"`
}

func currentVersion() versionInfo {
	v := versionInfo{Version: broker.Version, Commit: commit, Protocol: ipc.ProtocolVersion, GoVersion: runtime.Version()}
	if v.Commit == "" {
		v.Commit = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					v.Commit = s.Value
				}
			}
		}
	}
	return v
}

// versionString is the one line of --version.
func versionString() string {
	v := currentVersion()
	return fmt.Sprintf("%s (commit %s, protocol %d, %s)", v.Version, v.Commit, v.Protocol, v.GoVersion)
}

func versionCommand() *ucli.Command {
	return &ucli.Command{
		Name: "version", Usage: "print the version, commit, protocol version and Go version",
		Flags: []ucli.Flag{jsonFlag()},
		Action: func(c *ucli.Context) error {
			if _, err := args(c, 0, 0); err != nil {
				return err
			}
			v := currentVersion()
			if c.Bool("json") {
				return printJSON(c.App.Writer, v)
			}
			_, err := fmt.Fprintf(c.App.Writer, "commy %s\ncommit   %s\nprotocol %d\ngo       %s\n", v.Version, v.Commit, v.Protocol, v.GoVersion)
			return err
		},
	}
}
