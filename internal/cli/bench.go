package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commy/commy/internal/bench"
	"github.com/schollz/progressbar/v3"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

func benchCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "bench",
		Usage: "measure a running broker, and optionally Redis, over Unix sockets",
		Description: "Runs each scenario against the broker at --socket and, with --redis, against a Redis server on\n" +
			"a Unix socket in the same run, then prints latency percentiles, throughput and the commy/Redis\n" +
			"ratios; with --redis each measurement runs in --alternate slices, commy's and Redis's in turn,\n" +
			"so that a swing in the machine's speed falls on both alike. Scenarios: read (ReadVariable vs\n" +
			"GET), mapped-read (a read from the shared mapping), write (WriteVariable vs SET), notify (a\n" +
			"write until its one subscriber has the notice, vs PUBLISH), fanout (a write until the last of\n" +
			"--subscribers has it), open (GetServiceFilePath, descriptor, mmap and first read). read,\n" +
			"mapped-read, write and open run once for each count in --clients. The broker gets a tenant of\n" +
			"its own for the run (made and deleted again unless --service names one that exists); Redis gets\n" +
			"a key and a channel. federation (not run by default) writes on --socket until a mapped reader\n" +
			"on the bridged broker at --remote-socket has the value, against a bare JetStream KV put to a\n" +
			"watcher on --nats, op by op; --service must name a service both bridges federate.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "scenarios", Aliases: []string{"t"}, Value: strings.Join(bench.Scenarios, ","), Usage: "comma-separated `LIST` of scenarios to run"},
			&ucli.StringFlag{Name: "clients", Aliases: []string{"c"}, Value: "1,50", Usage: "comma-separated `COUNTS` of concurrent clients"},
			&ucli.IntFlag{Name: "requests", Aliases: []string{"n"}, Value: 20000, Usage: "requests per scenario and client count"},
			&ucli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Usage: "run each scenario this long instead of --requests"},
			&ucli.IntFlag{Name: "size", Value: 64, Usage: "value size in `BYTES`"},
			&ucli.IntFlag{Name: "pipeline", Aliases: []string{"P"}, Value: 1, Usage: "requests each client sends before waiting for their replies"},
			&ucli.IntFlag{Name: "subscribers", Value: 1000, Usage: "subscribed connections in the fanout scenario"},
			&ucli.IntFlag{Name: "rounds", Value: 200, Usage: "writes measured in the notify and fanout scenarios"},
			&ucli.IntFlag{Name: "stalled", Usage: "extra subscribers that never read, in notify and fanout"},
			&ucli.IntFlag{Name: "warmup", Value: 200, Usage: "unmeasured requests per client before each measurement"},
			&ucli.StringFlag{Name: "service", Usage: "`TENANT/SERVICE` to use (default: commy-bench-<pid>/bench, deleted after)"},
			&ucli.StringFlag{Name: "redis", Usage: "also measure the Redis server on this Unix `SOCKET`"},
			&ucli.IntFlag{Name: "alternate", Value: 4, Usage: "with --redis, run each measurement in `N` slices, commy's and Redis's in turn, and add them up"},
			&ucli.StringFlag{Name: "remote-socket", Usage: "federation: the `SOCKET` of the second, bridged broker"},
			&ucli.StringFlag{Name: "nats", Usage: "federation: the `URL` of the NATS server the bridges use, for the floor"},
			&ucli.IntFlag{Name: "nats-replicas", Value: 1, Usage: "federation: replicas of the floor's KV bucket (as the bridges' stream)"},
			&ucli.StringFlag{Name: "plot", Usage: "draw the latency percentiles of every measurement to `FILE.svg`"},
			jsonFlag(),
		},
		Action: runBench,
	}
}

// benchReport is what `commy bench --json` prints.
type benchReport struct {
	Machine benchMachine   `json:"machine"`
	Config  benchConfig    `json:"config"`
	Results []bench.Result `json:"results"`
	Ratios  []benchRatio   `json:"ratios,omitempty"`
}

type benchMachine struct {
	CPU          string  `json:"cpu"`
	CPUs         int     `json:"cpus"`
	Kernel       string  `json:"kernel"`
	GoVersion    string  `json:"go_version"`
	LoadAverage  float64 `json:"load_average"` // 1-minute, when the run began
	CommyVersion string  `json:"commy_version"`
	RedisVersion string  `json:"redis_version,omitempty"`
	Time         string  `json:"time"`
}

type benchConfig struct {
	Scenarios   []string `json:"scenarios"`
	Clients     []int    `json:"clients"`
	Requests    int      `json:"requests,omitempty"`
	Duration    string   `json:"duration,omitempty"`
	ValueSize   int      `json:"value_size"`
	Pipeline    int      `json:"pipeline"`
	Subscribers int      `json:"subscribers"`
	Rounds      int      `json:"rounds"`
	Stalled     int      `json:"stalled"`
	Alternate   int      `json:"alternate,omitempty"` // slices, when Redis was measured too
}

// benchRatio compares commy with Redis on one measurement: latencies as
// commy/Redis (below 1 is faster), throughput as commy/Redis (above 1 is
// faster).
type benchRatio struct {
	Measurement string  `json:"measurement"`
	Scenario    string  `json:"scenario"`
	Clients     int     `json:"clients"`
	Subscribers int     `json:"subscribers,omitempty"`
	P50         float64 `json:"p50"`
	P99         float64 `json:"p99"`
	P999        float64 `json:"p999"`
	OpsPerSec   float64 `json:"ops_per_sec"`
}

func runBench(c *ucli.Context) error {
	if c.NArg() > 0 {
		return usagef("usage: commy bench [flags] (no arguments)")
	}
	cfg, err := benchConfigOf(c)
	if err != nil {
		return err
	}
	tenant, service := fmt.Sprintf("commy-bench-%d", os.Getpid()), "bench"
	if s := c.String("service"); s != "" {
		t, err := splitService(s)
		if err != nil {
			return err
		}
		tenant, service = t.tenant, t.service
	}
	plotPath := c.String("plot")
	if plotPath != "" && !strings.HasSuffix(plotPath, ".svg") {
		return usagef("--plot %s: want a FILE.svg", plotPath)
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		cfg.Progress = &benchBar{w: c.App.ErrWriter}
	}

	sock, err := socketOf(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	var fed *bench.Federation
	if slices.Contains(cfg.Scenarios, bench.ScenarioFederation) {
		if c.String("remote-socket") == "" || c.String("nats") == "" {
			return usagef("the federation scenario needs --remote-socket and --nats")
		}
		if cfg.ValueSize < 8 {
			return usagef("the federation scenario needs --size of at least 8")
		}
		rc, err := dialAt(c, c.String("remote-socket"), "commy-bench")
		if err != nil {
			return err
		}
		defer rc.Close()
		fed = &bench.Federation{Remote: rc, Tenant: tenant, Service: service, NATS: c.String("nats"),
			Bucket: fmt.Sprintf("commy-bench-%d", os.Getpid()), Replicas: c.Int("nats-replicas")}
	}
	cl, err := dial(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	cm, err := bench.NewCommy(ctx, cl, sock, tenant, service, cfg.ValueSize)
	if err != nil {
		return err
	}
	defer cm.Close()
	systems := []bench.System{cm}
	if sock := c.String("redis"); sock != "" {
		rd, err := bench.DialRedis(ctx, sock, fmt.Sprintf("commy-bench-%d", os.Getpid()), cfg.ValueSize)
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return &cliError{code: CodeUnreachable, exit: ExitUnreachable, msg: fmt.Sprintf("no Redis at %s: %v", sock, ne.Err), err: err}
		}
		if err != nil {
			return err
		}
		defer rd.Close()
		systems = append(systems, rd)
	}
	rep := benchReport{Machine: machine(systems), Config: benchConfig{
		Scenarios: cfg.Scenarios, Clients: cfg.Clients, ValueSize: cfg.ValueSize, Pipeline: cfg.Pipeline,
		Subscribers: cfg.Subscribers, Rounds: cfg.Rounds, Stalled: cfg.Stalled,
	}}
	if len(systems) > 1 {
		rep.Config.Alternate = cfg.Alternate
	}
	if cfg.Duration > 0 {
		rep.Config.Duration = cfg.Duration.String()
	} else {
		rep.Config.Requests = cfg.Requests
	}
	local := slices.DeleteFunc(slices.Clone(cfg.Scenarios), func(s string) bool { return s == bench.ScenarioFederation })
	if len(local) > 0 {
		lc := cfg
		lc.Scenarios = local
		if rep.Results, err = bench.Run(ctx, lc, systems...); err != nil {
			return err
		}
	}
	if fed != nil {
		if fed.Writer, err = cl.Service(ctx, tenant, service); err != nil {
			return err
		}
		rs, err := bench.FederationRun(ctx, cfg, *fed)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, rs...)
	}
	rep.Ratios = ratios(rep.Results)
	if plotPath != "" {
		if err := writePlot(plotPath, rep.Results); err != nil {
			return err
		}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printBench(c.App.Writer, rep)
	return nil
}

func benchConfigOf(c *ucli.Context) (bench.Config, error) {
	cfg := bench.Config{
		Requests: c.Int("requests"), Duration: c.Duration("duration"), ValueSize: c.Int("size"),
		Pipeline: c.Int("pipeline"), Subscribers: c.Int("subscribers"), Rounds: c.Int("rounds"),
		Stalled: c.Int("stalled"), Warmup: c.Int("warmup"), Alternate: c.Int("alternate"),
	}
	for _, s := range strings.Split(c.String("scenarios"), ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(bench.Scenarios, s) && s != bench.ScenarioFederation {
			return cfg, usagef("--scenarios: unknown scenario %q (want some of %s,%s)", s, strings.Join(bench.Scenarios, ","), bench.ScenarioFederation)
		}
		if !slices.Contains(cfg.Scenarios, s) {
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	for _, s := range strings.Split(c.String("clients"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100000 {
			return cfg, usagef("--clients: %q is not a count from 1 to 100000", s)
		}
		cfg.Clients = append(cfg.Clients, n)
	}
	switch {
	case cfg.Requests < 1:
		return cfg, usagef("--requests must be at least 1")
	case cfg.Duration < 0:
		return cfg, usagef("--duration must not be negative")
	case cfg.ValueSize < 1 || cfg.ValueSize > 1<<20:
		return cfg, usagef("--size must be from 1 to 1048576 bytes")
	case cfg.Pipeline < 1 || cfg.Pipeline > 10000:
		return cfg, usagef("--pipeline must be from 1 to 10000")
	case cfg.Subscribers < 1 || cfg.Subscribers > 100000:
		return cfg, usagef("--subscribers must be from 1 to 100000")
	case cfg.Rounds < 1:
		return cfg, usagef("--rounds must be at least 1")
	case cfg.Stalled < 0 || cfg.Warmup < 0:
		return cfg, usagef("--stalled and --warmup must not be negative")
	case cfg.Alternate < 1 || cfg.Alternate > 1000:
		return cfg, usagef("--alternate must be from 1 to 1000")
	}
	return cfg, nil
}

func machine(systems []bench.System) benchMachine {
	m := benchMachine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Time: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAverage, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	for _, s := range systems {
		switch s.Name() {
		case "commy":
			m.CommyVersion = s.Version()
		case "redis":
			m.RedisVersion = s.Version()
		}
	}
	return m
}

// ratios pairs every commy result with the Redis result of the same
// measurement, and the federation result with its floor, bare JetStream.
func ratios(rs []bench.Result) []benchRatio {
	redis := map[string]bench.Result{}
	for _, r := range rs {
		if r.System == "redis" || r.System == "jetstream" {
			redis[r.Key()] = r
		}
	}
	var out []benchRatio
	for _, r := range rs {
		o, ok := redis[r.Key()]
		if r.System != "commy" || !ok {
			continue
		}
		out = append(out, benchRatio{
			Measurement: r.Label(), Scenario: r.Scenario, Clients: r.Clients, Subscribers: r.Subscribers,
			P50: ratio(r.P50Micros, o.P50Micros), P99: ratio(r.P99Micros, o.P99Micros),
			P999: ratio(r.P999Micros, o.P999Micros), OpsPerSec: ratio(r.OpsPerSec, o.OpsPerSec),
		})
	}
	return out
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// printBench prints the report as Markdown tables, readable as they are and
// ready for docs/benchmarks.md.
func printBench(w io.Writer, rep benchReport) {
	m := rep.Machine
	fmt.Fprintf(w, "commy %s", m.CommyVersion)
	if m.RedisVersion != "" {
		fmt.Fprintf(w, " vs Redis %s", m.RedisVersion)
	}
	fmt.Fprintf(w, "; %s, %d CPUs, %s, %s; load average %.2f at the start; %s\n", m.CPU, m.CPUs, m.Kernel, m.GoVersion, m.LoadAverage, m.Time)
	cf := rep.Config
	amount := fmt.Sprintf("%d requests", cf.Requests)
	if cf.Duration != "" {
		amount = cf.Duration
	}
	fmt.Fprintf(w, "%d-byte values, pipeline %d, %s per measurement, %d rounds of notify/fanout", cf.ValueSize, cf.Pipeline, amount, cf.Rounds)
	if cf.Stalled > 0 {
		fmt.Fprintf(w, ", %d stalled subscribers", cf.Stalled)
	}
	if cf.Alternate > 1 {
		fmt.Fprintf(w, "; each in %d slices, the systems in turn", cf.Alternate)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	rows := [][]string{{"measurement", "system", "ops", "ops/s", "p50 us", "p99 us", "p99.9 us"}}
	for _, r := range rep.Results {
		rows = append(rows, []string{r.Label(), r.System, strconv.FormatInt(r.Ops, 10), fmt.Sprintf("%.0f", r.OpsPerSec),
			micro(r.P50Micros), micro(r.P99Micros), micro(r.P999Micros)})
	}
	markdownTable(w, rows, 2)
	if len(rep.Ratios) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commy / Redis, and federation / bare JetStream KV (latency: below 1 is faster; throughput: above 1 is faster)")
	fmt.Fprintln(w)
	rows = [][]string{{"measurement", "p50", "p99", "p99.9", "ops/s"}}
	for _, r := range rep.Ratios {
		rows = append(rows, []string{r.Measurement, fmt.Sprintf("%.2f", r.P50), fmt.Sprintf("%.2f", r.P99), fmt.Sprintf("%.2f", r.P999), fmt.Sprintf("%.2f", r.OpsPerSec)})
	}
	markdownTable(w, rows, 1)
}

func micro(us float64) string {
	if us < 10 {
		return fmt.Sprintf("%.2f", us)
	}
	return fmt.Sprintf("%.0f", us)
}

// markdownTable prints rows as a padded Markdown table, the first row as the
// header; the columns from firstNumeric on are right-aligned.
func markdownTable(w io.Writer, rows [][]string, firstNumeric int) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, cell := range r {
			width[i] = max(width[i], len(cell), 3)
		}
	}
	line := func(r []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, cell := range r {
			pad := strings.Repeat(" ", width[i]-len(cell))
			if i >= firstNumeric {
				b.WriteString(" " + pad + cell + " |")
			} else {
				b.WriteString(" " + cell + pad + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(width))
	for i, n := range width {
		if i >= firstNumeric {
			sep[i] = strings.Repeat("-", n-1) + ":"
		} else {
			sep[i] = strings.Repeat("-", n)
		}
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}

// benchBar shows a measurement's progress on a terminal.
type benchBar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (b *benchBar) Start(desc string, total int64) {
	b.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.w), progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30), progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}

func (b *benchBar) Set(n int64) { b.bar.Set64(n) }

func (b *benchBar) Finish() {
	b.bar.Finish()
	b.bar = nil
}

var errNoResults = errors.New("cli: nothing measured to plot")
