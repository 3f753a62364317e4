package cli

import (
	"context"
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

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/paths"
	ucli "github.com/urfave/cli/v2"
)

func jsonFlag() *ucli.BoolFlag {
	return &ucli.BoolFlag{Name: "json", Usage: "print JSON for scripts (fields: docs/cli.md); errors too, on stderr"}
}

// dial connects to the broker named by --socket / COMMY_SOCKET, and says
// what was tried when no broker answers.
func dial(c *ucli.Context) (*client.Client, error) {
	path, err := socketOf(c)
	if err != nil {
		return nil, &cliError{code: CodeUnreachable, exit: ExitUnreachable, err: err,
			msg: fmt.Sprintf("no default socket: %v", err)}
	}
	return dialAt(c, path, "commy-cli")
}

// dialAt connects to the broker at path as client name, and says what was
// tried when none answers.
func dialAt(c *ucli.Context, path, name string) (*client.Client, error) {
	if err := notSocket(path); err != nil {
		return nil, err
	}
	// A socket that another user put in the way would see every request,
	// values and all.
	if err := paths.CheckSocket(path, os.Getuid()); errors.Is(err, paths.ErrInsecure) && !anySocketOwner(c) {
		return nil, &cliError{code: CodeUntrustedSocket, exit: ExitPermission, err: err,
			msg: fmt.Sprintf("%v (--any-socket-owner dials it anyway)", err)}
	}
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, path, client.WithName(name))
	if err != nil {
		var re *client.Error
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, dialError(path, err)
	}
	return cl, nil
}

// withClient checks the arguments, then runs fn with a connected client.
func withClient(min, max int, fn func(c *ucli.Context, cl *client.Client, a []string) error) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		a, err := args(c, min, max)
		if err != nil {
			return err
		}
		cl, err := dial(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		return asTyped(fn(c, cl, a), a)
	}
}

// asTyped puts TENANT/SERVICE as the user typed it in place of the service
// id ("acme_orders") in the broker's error messages.
func asTyped(err error, a []string) error {
	var re *client.Error
	if len(a) == 0 || !errors.As(err, &re) {
		return err
	}
	t, s, ok := strings.Cut(a[0], "/")
	if !ok {
		return err
	}
	return &client.Error{Code: re.Code, Message: strings.ReplaceAll(re.Message, t+"_"+s, a[0])}
}

// target is TENANT/SERVICE as the user typed it.
type target struct{ tenant, service string }

func (t target) String() string { return t.tenant + "/" + t.service }

// splitService parses TENANT/SERVICE.
func splitService(s string) (target, error) {
	t, svc, ok := strings.Cut(s, "/")
	if !ok || t == "" || svc == "" {
		return target{}, usagef("%q: want TENANT/SERVICE", s)
	}
	return target{t, svc}, nil
}

// args checks the command's arguments against its ArgsUsage: at least min,
// at most max (-1: any), and no flag among them (urfave/cli stops reading
// flags at the first argument).
func args(c *ucli.Context, min, max int) ([]string, error) {
	a := c.Args().Slice()
	usage := strings.TrimSpace(fmt.Sprintf("usage: %s [flags] %s", fullName(c), c.Command.ArgsUsage))
	for _, s := range a {
		if isFlag(c, s) {
			return nil, usagef("flag %s after an argument: flags go before the arguments (%s)", s, usage)
		}
	}
	switch {
	case len(a) < min:
		return nil, usagef("missing arguments; %s", usage)
	case max >= 0 && len(a) > max:
		return nil, usagef("unexpected argument %q; %s", a[max], usage)
	}
	return a, nil
}

func fullName(c *ucli.Context) string {
	if c.Command == nil || c.Command.Name == "" || c.Command.Name == c.App.Name {
		return "commy"
	}
	return "commy " + c.Command.Name
}

// isFlag reports whether s names one of the command's flags.
func isFlag(c *ucli.Context, s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(s, "-"), "=")
	for _, f := range c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return name == "help" || name == "h"
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
		if items == nil {
			items = []T{}
		}
		return printJSON(c.App.Writer, items)
	}
	rows := make([][]string, len(items))
	for i, it := range items {
		rows[i] = row(it)
	}
	return table(c.App.Writer, header, rows)
}

// done prints what a command did: v with --json, else the line.
func done(c *ucli.Context, v any, line string, a ...any) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, v)
	}
	_, err := fmt.Fprintf(c.App.Writer, line+"\n", a...)
	return err
}

type tenantJSON struct {
	TenantID string `json:"tenant_id"`
}

func tenantsCommand() *ucli.Command {
	return &ucli.Command{
		Name: "tenants", Usage: "list tenants", Flags: []ucli.Flag{jsonFlag()},
		Action: withClient(0, 0, func(c *ucli.Context, cl *client.Client, _ []string) error {
			ts, err := cl.Tenants(c.Context)
			if err != nil {
				return err
			}
			out := make([]tenantJSON, len(ts))
			for i, t := range ts {
				out[i] = tenantJSON{t}
			}
			return list(c, out, "TENANT", func(t tenantJSON) []string { return []string{t.TenantID} })
		}),
	}
}

type serviceJSON struct {
	TenantID string `json:"tenant_id"`
	client.ServiceInfo
}

func servicesCommand() *ucli.Command {
	return &ucli.Command{
		Name: "services", Usage: "list a tenant's services", ArgsUsage: "TENANT", Flags: []ucli.Flag{jsonFlag(), bytesFlag()},
		Action: withClient(1, 1, func(c *ucli.Context, cl *client.Client, a []string) error {
			ss, err := cl.Services(c.Context, a[0])
			if err != nil {
				return err
			}
			out := make([]serviceJSON, len(ss))
			for i, s := range ss {
				out[i] = serviceJSON{a[0], s}
			}
			return list(c, out, "SERVICE\tVARIABLES\tFILE SIZE", func(s serviceJSON) []string {
				return []string{a[0] + "/" + s.ServiceName, strconv.FormatUint(s.Variables, 10), size(c, s.FileSize)}
			})
		}),
	}
}

func varsCommand() *ucli.Command {
	return &ucli.Command{
		Name: "vars", Usage: "list a service's variables", ArgsUsage: "TENANT/SERVICE", Flags: []ucli.Flag{jsonFlag(), bytesFlag()},
		Action: withClient(1, 1, func(c *ucli.Context, cl *client.Client, a []string) error {
			svc, _, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			vs, err := svc.Variables(c.Context)
			if err != nil {
				return err
			}
			return list(c, vs, "NAME\tSIZE\tCAPACITY\tVERSION", func(v client.VariableInfo) []string {
				return []string{v.Name, size(c, v.Size), size(c, v.Capacity), strconv.FormatUint(v.Version, 10)}
			})
		}),
	}
}

func service(c *ucli.Context, cl *client.Client, ts string) (*client.Service, target, error) {
	t, err := splitService(ts)
	if err != nil {
		return nil, t, err
	}
	svc, err := cl.Service(c.Context, t.tenant, t.service)
	return svc, t, err
}

// valueJSON is a value as get and watch print it with --json.
type valueJSON struct {
	TenantID     string `json:"tenant_id"`
	ServiceName  string `json:"service_name"`
	VariableName string `json:"variable_name"`
	Version      uint64 `json:"version"`
	Size         int    `json:"size"`
	Encoding     string `json:"encoding"` // base64, text or hex
	Data         string `json:"data"`
}

func newValue(t target, name string, v uint64, data []byte, f string) (valueJSON, error) {
	s, err := encode(data, f)
	return valueJSON{TenantID: t.tenant, ServiceName: t.service, VariableName: name, Version: v, Size: len(data), Encoding: f, Data: s}, err
}

func getCommand() *ucli.Command {
	return &ucli.Command{
		Name: "get", Usage: "print a variable's value", ArgsUsage: "TENANT/SERVICE VARIABLE",
		Flags: []ucli.Flag{jsonFlag(), formatFlag(), &ucli.BoolFlag{Name: "mapped", Usage: "read through the shared-memory mapping"}},
		Action: withClient(2, 2, func(c *ucli.Context, cl *client.Client, a []string) error {
			f, err := outFormat(c)
			if err != nil {
				return err
			}
			svc, t, err := service(c, cl, a[0])
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
				if !m.Local() && !c.Bool("json") {
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
				out, err := newValue(t, a[1], v, data, f)
				if err != nil {
					return err
				}
				return printJSON(c.App.Writer, out)
			}
			if f == fmtRaw {
				_, err = c.App.Writer.Write(data)
				return err
			}
			s, err := encode(data, f)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, s)
			return err
		}),
	}
}

// writtenJSON is what set, alloc and dealloc print with --json.
type writtenJSON struct {
	TenantID     string `json:"tenant_id"`
	ServiceName  string `json:"service_name"`
	VariableName string `json:"variable_name"`
	Version      uint64 `json:"version,omitempty"` // not for dealloc
}

func setCommand() *ucli.Command {
	return &ucli.Command{
		Name: "set", Usage: "write a variable", ArgsUsage: "TENANT/SERVICE VARIABLE VALUE|-",
		Flags: []ucli.Flag{jsonFlag(), inputFlag()},
		Action: withClient(3, 3, func(c *ucli.Context, cl *client.Client, a []string) error {
			data, err := decode(c, a[2])
			if err != nil {
				return err
			}
			svc, t, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			v, err := svc.Write(c.Context, a[1], data)
			if err != nil {
				return err
			}
			return done(c, writtenJSON{t.tenant, t.service, a[1], v}, "%s %s version %d", t, a[1], v)
		}),
	}
}

// watchJSON is one line of watch --json.
type watchJSON struct {
	Time  string `json:"time"`
	Event string `json:"event"` // changed, deleted (the variable) or service_deleted
	valueJSON
}

func watchCommand() *ucli.Command {
	return &ucli.Command{
		Name: "watch", Usage: "print each change to a service until interrupted", ArgsUsage: "TENANT/SERVICE [VARIABLE...]",
		Description: "Prints one line per change. Values longer than the terminal are cut (--full prints them whole).\n" +
			"When the service is deleted, watch says so and exits with status 66.",
		Flags: []ucli.Flag{jsonFlag(), formatFlag(), &ucli.BoolFlag{Name: "full", Usage: "print whole values, however long"}},
		Action: withClient(1, -1, func(c *ucli.Context, cl *client.Client, a []string) error {
			f, err := outFormat(c)
			if err != nil {
				return err
			}
			svc, t, err := service(c, cl, a[0])
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
			w := &watcher{c: c, t: t, f: f}
			if !c.Bool("full") {
				w.width = termWidth(c.App.Writer)
			}
			if !c.Bool("json") {
				fmt.Fprintf(c.App.ErrWriter, "watching %s (%s); Ctrl-C to stop\n", t, map[bool]string{true: "mapped", false: "socket"}[m.Local()])
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
				gone := false
				for _, i := range idx {
					name, ver := n.Variables[i], n.Versions[i]
					var data []byte
					deleted := ver == 0
					if !deleted {
						buf, _, err = m.Read(name, buf[:0])
						if errors.Is(err, client.ErrVariableNotFound) {
							deleted = true
						} else if errors.Is(err, client.ErrServiceDeleted) {
							if err := w.serviceDeleted(); err != nil {
								return err
							}
							return fmt.Errorf("watch %s: the service was deleted: %w", t, err)
						} else if err != nil {
							return err
						}
						data = buf
					}
					gone = gone || deleted
					if err := w.change(name, ver, data, deleted); err != nil {
						return err
					}
				}
				if gone {
					// A deleted service ends the subscription with every
					// variable at version 0.
					if _, err := cl.Service(ctx, t.tenant, t.service); errors.Is(err, client.ErrServiceNotFound) {
						if err := w.serviceDeleted(); err != nil {
							return err
						}
						return fmt.Errorf("watch %s: the service was deleted: %w", t, err)
					}
				}
			}
		}),
	}
}

// watcher prints watch's lines.
type watcher struct {
	c     *ucli.Context
	t     target
	f     string
	width int // cut values to this many characters; 0: never
}

func (w *watcher) change(name string, ver uint64, data []byte, deleted bool) error {
	now := time.Now().Format(time.RFC3339Nano)
	out := w.c.App.Writer
	if w.c.Bool("json") {
		line := watchJSON{Time: now, Event: "changed"}
		if deleted {
			line.Event = "deleted"
			line.valueJSON = valueJSON{TenantID: w.t.tenant, ServiceName: w.t.service, VariableName: name, Encoding: w.f}
		} else {
			v, err := newValue(w.t, name, ver, data, w.f)
			if err != nil {
				return err
			}
			line.valueJSON = v
		}
		return json.NewEncoder(out).Encode(line)
	}
	if deleted {
		_, err := fmt.Fprintf(out, "%s %s deleted\n", now, name)
		return err
	}
	var s string
	if w.f == fmtRaw {
		s = string(data)
	} else {
		var err error
		if s, err = encode(data, w.f); err != nil {
			return err
		}
	}
	head := fmt.Sprintf("%s %s v%d = ", now, name, ver)
	width := w.width
	if width > 0 {
		width = max(width-len(head), 16)
	}
	_, err := fmt.Fprintf(out, "%s%s\n", head, truncate(s, width, len(data)))
	return err
}

func (w *watcher) serviceDeleted() error {
	now := time.Now().Format(time.RFC3339Nano)
	if w.c.Bool("json") {
		return json.NewEncoder(w.c.App.Writer).Encode(watchJSON{Time: now, Event: "service_deleted", valueJSON: valueJSON{TenantID: w.t.tenant, ServiceName: w.t.service, Encoding: w.f}})
	}
	_, err := fmt.Fprintf(w.c.App.Writer, "%s service %s deleted\n", now, w.t)
	return err
}

func statsCommand() *ucli.Command {
	return &ucli.Command{
		Name: "stats", Usage: "print the broker's figures (admin)", Flags: []ucli.Flag{jsonFlag(), bytesFlag()},
		Action: withClient(0, 0, func(c *ucli.Context, cl *client.Client, _ []string) error {
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
				{"service_file_bytes", size(c, st.ServiceFileBytes)},
				{"bytes_in", size(c, st.BytesIn)},
				{"bytes_out", size(c, st.BytesOut)},
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
			for _, l := range st.Limits {
				rows = append(rows, []string{limitFigure(l), limitValue(c, l)})
			}
			return table(c.App.Writer, "FIGURE\tVALUE", rows)
		}),
	}
}

// createdJSON is what create and delete print with --json.
type createdJSON struct {
	TenantID    string `json:"tenant_id"`
	ServiceName string `json:"service_name,omitempty"`
	ServiceID   string `json:"service_id,omitempty"`
	FilePath    string `json:"file_path,omitempty"` // create and remap only
}

func createCommand() *ucli.Command {
	return &ucli.Command{
		Name: "create", Usage: "create a tenant, or a service of a tenant", ArgsUsage: "TENANT | TENANT/SERVICE",
		Flags: []ucli.Flag{jsonFlag()},
		Action: withClient(1, 1, func(c *ucli.Context, cl *client.Client, a []string) error {
			t, s, isSvc := strings.Cut(a[0], "/")
			if !isSvc {
				if err := cl.CreateTenant(c.Context, t); err != nil {
					return err
				}
				return done(c, createdJSON{TenantID: t}, "created tenant %s", t)
			}
			svc, err := cl.CreateService(c.Context, t, s)
			if err != nil {
				return err
			}
			return done(c, createdJSON{t, s, svc.ID, svc.FilePath}, "created service %s/%s (file %s)", t, s, svc.FilePath)
		}),
	}
}

func deleteCommand() *ucli.Command {
	return &ucli.Command{
		Name: "delete", Usage: "delete a tenant (with its services) or a service", ArgsUsage: "TENANT | TENANT/SERVICE",
		Flags: []ucli.Flag{jsonFlag()},
		Action: withClient(1, 1, func(c *ucli.Context, cl *client.Client, a []string) error {
			t, s, isSvc := strings.Cut(a[0], "/")
			if !isSvc {
				if err := cl.DeleteTenant(c.Context, t); err != nil {
					return err
				}
				return done(c, createdJSON{TenantID: t}, "deleted tenant %s", t)
			}
			if err := cl.DeleteService(c.Context, t, s); err != nil {
				return err
			}
			return done(c, createdJSON{TenantID: t, ServiceName: s}, "deleted service %s/%s", t, s)
		}),
	}
}

func remapCommand() *ucli.Command {
	return &ucli.Command{
		Name: "remap", Usage: "move a service to a new file, so that mapped readers ask for it again (after revoking rights)", ArgsUsage: "TENANT/SERVICE",
		Flags: []ucli.Flag{jsonFlag()},
		Action: withClient(1, 1, func(c *ucli.Context, cl *client.Client, a []string) error {
			t, s, isSvc := strings.Cut(a[0], "/")
			if !isSvc {
				return usagef("%q: want TENANT/SERVICE", a[0])
			}
			svc, err := cl.ReplaceServiceFile(c.Context, t, s)
			if err != nil {
				return err
			}
			return done(c, createdJSON{t, s, svc.ID, svc.FilePath}, "replaced the file of service %s/%s (file %s)", t, s, svc.FilePath)
		}),
	}
}

func allocCommand() *ucli.Command {
	return &ucli.Command{
		Name: "alloc", Usage: "create a variable", ArgsUsage: "TENANT/SERVICE VARIABLE [VALUE|-]",
		Flags: []ucli.Flag{jsonFlag(), inputFlag(), &ucli.IntFlag{Name: "capacity", Usage: "room in `BYTES` before the value must move (rounded up to a multiple of 64)"}},
		Action: withClient(2, 3, func(c *ucli.Context, cl *client.Client, a []string) error {
			var data []byte
			var err error
			if len(a) == 3 {
				if data, err = decode(c, a[2]); err != nil {
					return err
				}
			}
			if c.Int("capacity") < 0 {
				return usagef("--capacity %d: want 0 or more bytes", c.Int("capacity"))
			}
			svc, t, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			v, err := svc.Allocate(c.Context, a[1], data, c.Int("capacity"))
			if err != nil {
				return err
			}
			return done(c, writtenJSON{t.tenant, t.service, a[1], v}, "%s %s version %d", t, a[1], v)
		}),
	}
}

func deallocCommand() *ucli.Command {
	return &ucli.Command{
		Name: "dealloc", Usage: "delete a variable", ArgsUsage: "TENANT/SERVICE VARIABLE",
		Flags: []ucli.Flag{jsonFlag()},
		Action: withClient(2, 2, func(c *ucli.Context, cl *client.Client, a []string) error {
			svc, t, err := service(c, cl, a[0])
			if err != nil {
				return err
			}
			if err := svc.Deallocate(c.Context, a[1]); err != nil {
				return err
			}
			return done(c, writtenJSON{TenantID: t.tenant, ServiceName: t.service, VariableName: a[1]}, "%s %s deallocated", t, a[1])
		}),
	}
}
