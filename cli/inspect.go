package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/commy/commy/client"
	ucli "github.com/urfave/cli/v2"
)

var jsonFlag = &ucli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}

var formatFlag = &ucli.StringFlag{Name: "format", Value: "auto", Usage: "how to print values: auto (text when printable, else hex), utf8, hex or raw"}

// dial connects to the broker named by --socket / COMMY_SOCKET.
func dial(c *ucli.Context) (*client.Client, error) {
	socket, err := socketOf(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
	defer cancel()
	return client.Dial(ctx, socket, client.WithName("commy-cli"))
}

// withClient runs fn with a connected client.
func withClient(fn func(c *ucli.Context, cl *client.Client) error) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		cl, err := dial(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		return fn(c, cl)
	}
}

// splitService parses TENANT/SERVICE.
func splitService(s string) (string, string, error) {
	t, svc, ok := strings.Cut(s, "/")
	if !ok || t == "" || svc == "" {
		return "", "", usagef("%q: want TENANT/SERVICE", s)
	}
	return t, svc, nil
}

func args(c *ucli.Context, min, max int, usage string) ([]string, error) {
	a := c.Args().Slice()
	if len(a) < min || (max >= 0 && len(a) > max) {
		return nil, usagef("usage: commy %s %s", c.Command.Name, usage)
	}
	return a, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// list prints items as JSON with --json, else as a table of one row each.
func list[T any](c *ucli.Context, items []T, header string, row func(T) []string) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, items)
	}
	rows := make([][]string, len(items))
	for i, it := range items {
		rows[i] = row(it)
	}
	return table(c.App.Writer, header, rows)
}

func tenantsCommand() *ucli.Command {
	return &ucli.Command{
		Name: "tenants", Usage: "list tenants", Flags: []ucli.Flag{jsonFlag},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			ts, err := cl.Tenants(c.Context)
			if err != nil {
				return err
			}
			return list(c, ts, "TENANT", func(t string) []string { return []string{t} })
		}),
	}
}

func servicesCommand() *ucli.Command {
	return &ucli.Command{
		Name: "services", Usage: "list a tenant's services", ArgsUsage: "TENANT", Flags: []ucli.Flag{jsonFlag},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 1, 1, "TENANT")
			if err != nil {
				return err
			}
			ss, err := cl.Services(c.Context, a[0])
			if err != nil {
				return err
			}
			return list(c, ss, "SERVICE\tID\tVARIABLES\tFILE SIZE", func(s client.ServiceInfo) []string {
				return []string{s.ServiceName, s.ServiceID, strconv.FormatUint(s.Variables, 10), strconv.FormatUint(s.FileSize, 10)}
			})
		}),
	}
}

func varsCommand() *ucli.Command {
	return &ucli.Command{
		Name: "vars", Usage: "list a service's variables", ArgsUsage: "TENANT/SERVICE", Flags: []ucli.Flag{jsonFlag},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 1, 1, "TENANT/SERVICE")
			if err != nil {
				return err
			}
			svc, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			vs, err := svc.Variables(c.Context)
			if err != nil {
				return err
			}
			return list(c, vs, "NAME\tSIZE\tCAPACITY\tVERSION", func(v client.VariableInfo) []string {
				return []string{v.Name, strconv.FormatUint(v.Size, 10), strconv.FormatUint(v.Capacity, 10), strconv.FormatUint(v.Version, 10)}
			})
		}),
	}
}

func service(c *ucli.Context, cl *client.Client, ts string) (*client.Service, error) {
	t, s, err := splitService(ts)
	if err != nil {
		return nil, err
	}
	return cl.Service(c.Context, t, s)
}

// value is how a value is printed as JSON.
type value struct {
	Variable string  `json:"variable"`
	Version  uint64  `json:"version"`
	Size     int     `json:"size"`
	Text     *string `json:"text,omitempty"` // when the value is valid UTF-8
	Hex      string  `json:"hex"`
}

func newValue(name string, v uint64, data []byte) value {
	out := value{Variable: name, Version: v, Size: len(data), Hex: hex.EncodeToString(data)}
	if utf8.Valid(data) {
		s := string(data)
		out.Text = &s
	}
	return out
}

// format renders a value for people.
func format(data []byte, how string) (string, error) {
	switch how {
	case "auto":
		if utf8.Valid(data) && strings.IndexFunc(string(data), func(r rune) bool { return !unicode.IsPrint(r) && r != '\n' && r != '\t' }) < 0 {
			return string(data), nil
		}
		return "0x" + hex.EncodeToString(data), nil
	case "utf8":
		return string(data), nil
	case "hex":
		return hex.EncodeToString(data), nil
	case "raw":
		return string(data), nil
	}
	return "", usagef("--format %q: want auto, utf8, hex or raw", how)
}

func getCommand() *ucli.Command {
	return &ucli.Command{
		Name: "get", Usage: "print a variable's value", ArgsUsage: "TENANT/SERVICE VARIABLE",
		Flags: []ucli.Flag{jsonFlag, formatFlag, &ucli.BoolFlag{Name: "mapped", Usage: "read through the shared-memory mapping"}},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 2, 2, "TENANT/SERVICE VARIABLE")
			if err != nil {
				return err
			}
			svc, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			var data []byte
			var v uint64
			if c.Bool("mapped") {
				m, err := svc.Map(c.Context)
				if err != nil {
					return err
				}
				defer m.Close()
				if !m.Local() {
					fmt.Fprintln(c.App.ErrWriter, "commy: no map right: read over the socket")
				}
				data, v, err = m.Read(a[1], nil)
				if err != nil {
					return err
				}
			} else if data, v, err = svc.Read(c.Context, a[1]); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, newValue(a[1], v, data))
			}
			s, err := format(data, c.String("format"))
			if err != nil {
				return err
			}
			if c.String("format") == "raw" {
				_, err = io.WriteString(c.App.Writer, s)
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, s)
			return err
		}),
	}
}

// parseValue reads VALUE: text, hex with --hex, or standard input for "-".
func parseValue(c *ucli.Context, s string) ([]byte, error) {
	if s == "-" {
		return io.ReadAll(os.Stdin)
	}
	if c.Bool("hex") {
		b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
		if err != nil {
			return nil, usagef("--hex value: %v", err)
		}
		return b, nil
	}
	return []byte(s), nil
}

var hexFlag = &ucli.BoolFlag{Name: "hex", Usage: "VALUE is hexadecimal"}

func setCommand() *ucli.Command {
	return &ucli.Command{
		Name: "set", Usage: "write a variable", ArgsUsage: "TENANT/SERVICE VARIABLE VALUE|-",
		Flags: []ucli.Flag{jsonFlag, hexFlag},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 3, 3, "TENANT/SERVICE VARIABLE VALUE|-")
			if err != nil {
				return err
			}
			data, err := parseValue(c, a[2])
			if err != nil {
				return err
			}
			svc, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			v, err := svc.Write(c.Context, a[1], data)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"variable": a[1], "version": v})
			}
			_, err = fmt.Fprintf(c.App.Writer, "%s version %d\n", a[1], v)
			return err
		}),
	}
}

func watchCommand() *ucli.Command {
	return &ucli.Command{
		Name: "watch", Usage: "print each change to a service until interrupted", ArgsUsage: "TENANT/SERVICE [VARIABLE...]",
		Flags: []ucli.Flag{jsonFlag, formatFlag},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 1, -1, "TENANT/SERVICE [VARIABLE...]")
			if err != nil {
				return err
			}
			if _, err := format(nil, c.String("format")); err != nil {
				return err
			}
			svc, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			ctx, stop := signalContext(c.Context)
			defer stop()
			sub, err := svc.Subscribe(ctx, a[1:]...)
			if err != nil {
				return err
			}
			defer sub.Close()
			m, err := svc.Map(ctx)
			if err != nil {
				return err
			}
			defer m.Close()
			if !c.Bool("json") {
				fmt.Fprintf(c.App.ErrWriter, "watching %s (%s); Ctrl-C to stop\n", svc.ID, map[bool]string{true: "mapped", false: "socket"}[m.Local()])
			}
			var buf []byte
			for {
				n, err := sub.Next(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				idx := make([]int, len(n.Variables))
				for i := range idx {
					idx[i] = i
				}
				sort.Slice(idx, func(i, j int) bool { return n.Variables[idx[i]] < n.Variables[idx[j]] })
				for _, i := range idx {
					name, ver := n.Variables[i], n.Versions[i]
					var data []byte
					deleted := ver == 0
					if !deleted {
						buf, _, err = m.Read(name, buf[:0])
						if errors.Is(err, client.ErrVariableNotFound) {
							deleted = true
						} else if err != nil {
							return err
						}
						data = buf
					}
					if err := printChange(c, name, ver, data, deleted); err != nil {
						return err
					}
				}
			}
		}),
	}
}

func printChange(c *ucli.Context, name string, ver uint64, data []byte, deleted bool) error {
	now := time.Now().Format(time.RFC3339Nano)
	if c.Bool("json") {
		if deleted {
			return json.NewEncoder(c.App.Writer).Encode(map[string]any{"time": now, "variable": name, "deleted": true})
		}
		v := newValue(name, ver, data)
		return json.NewEncoder(c.App.Writer).Encode(struct {
			Time string `json:"time"`
			value
		}{now, v})
	}
	if deleted {
		_, err := fmt.Fprintf(c.App.Writer, "%s %s deleted\n", now, name)
		return err
	}
	s, err := format(data, c.String("format"))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s %s v%d = %s\n", now, name, ver, s)
	return err
}

func statsCommand() *ucli.Command {
	return &ucli.Command{
		Name: "stats", Usage: "print the broker's figures (admin)", Flags: []ucli.Flag{jsonFlag},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			st, err := cl.Stats(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, st)
			}
			rows := [][]string{
				{"server_version", st.ServerVersion},
				{"uptime", (time.Duration(st.UptimeSeconds * float64(time.Second))).Round(time.Second).String()},
				{"connections", fmt.Sprint(st.Connections)},
				{"connections_total", fmt.Sprint(st.ConnectionsTotal)},
				{"connections_rejected", fmt.Sprint(st.ConnectionsRejected)},
				{"tenants", fmt.Sprint(st.Tenants)},
				{"services", fmt.Sprint(st.Services)},
				{"variables", fmt.Sprint(st.Variables)},
				{"service_file_bytes", fmt.Sprint(st.ServiceFileBytes)},
				{"bytes_in", fmt.Sprint(st.BytesIn)},
				{"bytes_out", fmt.Sprint(st.BytesOut)},
				{"notices_sent", fmt.Sprint(st.NoticesSent)},
				{"notices_merged", fmt.Sprint(st.NoticesMerged)},
				{"policy_reloads", fmt.Sprint(st.PolicyReloads)},
				{"policy_reload_errors", fmt.Sprint(st.PolicyReloadErrors)},
				{"audit_errors", fmt.Sprint(st.AuditErrors)},
				{"probe", st.Probe},
				{"probe_events", fmt.Sprint(st.ProbeEvents)},
				{"probe_lost", fmt.Sprint(st.ProbeLost)},
			}
			for _, k := range slices.Sorted(maps.Keys(st.Requests)) {
				rows = append(rows, []string{"requests." + k, fmt.Sprint(st.Requests[k])})
				for _, code := range slices.Sorted(maps.Keys(st.RequestErrors[k])) {
					rows = append(rows, []string{"requests." + k + "." + code, fmt.Sprint(st.RequestErrors[k][code])})
				}
			}
			for _, k := range slices.Sorted(maps.Keys(st.Errors)) {
				rows = append(rows, []string{"errors." + k, fmt.Sprint(st.Errors[k])})
			}
			for _, k := range slices.Sorted(maps.Keys(st.AuditEvents)) {
				rows = append(rows, []string{"audit_events." + k, fmt.Sprint(st.AuditEvents[k])})
			}
			return table(c.App.Writer, "FIGURE\tVALUE", rows)
		}),
	}
}

func createCommand() *ucli.Command {
	return &ucli.Command{
		Name: "create", Usage: "create a tenant, or a service of a tenant", ArgsUsage: "TENANT | TENANT/SERVICE",
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 1, 1, "TENANT | TENANT/SERVICE")
			if err != nil {
				return err
			}
			t, s, isSvc := strings.Cut(a[0], "/")
			if !isSvc {
				return cl.CreateTenant(c.Context, t)
			}
			svc, err := cl.CreateService(c.Context, t, s)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, svc.FilePath)
			return err
		}),
	}
}

func deleteCommand() *ucli.Command {
	return &ucli.Command{
		Name: "delete", Usage: "delete a tenant (with its services) or a service", ArgsUsage: "TENANT | TENANT/SERVICE",
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 1, 1, "TENANT | TENANT/SERVICE")
			if err != nil {
				return err
			}
			t, s, isSvc := strings.Cut(a[0], "/")
			if !isSvc {
				return cl.DeleteTenant(c.Context, t)
			}
			return cl.DeleteService(c.Context, t, s)
		}),
	}
}

func allocCommand() *ucli.Command {
	return &ucli.Command{
		Name: "alloc", Usage: "create a variable", ArgsUsage: "TENANT/SERVICE VARIABLE [VALUE|-]",
		Flags: []ucli.Flag{hexFlag, &ucli.IntFlag{Name: "capacity", Usage: "room in `BYTES` before the value must move"}},
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 2, 3, "TENANT/SERVICE VARIABLE [VALUE|-]")
			if err != nil {
				return err
			}
			var data []byte
			if len(a) == 3 {
				if data, err = parseValue(c, a[2]); err != nil {
					return err
				}
			}
			svc, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			_, err = svc.Allocate(c.Context, a[1], data, c.Int("capacity"))
			return err
		}),
	}
}

func deallocCommand() *ucli.Command {
	return &ucli.Command{
		Name: "dealloc", Usage: "delete a variable", ArgsUsage: "TENANT/SERVICE VARIABLE",
		Action: withClient(func(c *ucli.Context, cl *client.Client) error {
			a, err := args(c, 2, 2, "TENANT/SERVICE VARIABLE")
			if err != nil {
				return err
			}
			svc, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			return svc.Deallocate(c.Context, a[1])
		}),
	}
}
