package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/commy/commy/internal/bench"
	"github.com/commy/commy/internal/testutil"
)

// benchRun runs `commy bench --json` with small counts and decodes the report.
func benchRun(t *testing.T, args ...string) benchReport {
	t.Helper()
	plot := filepath.Join(t.TempDir(), "p.svg")
	args = append([]string{"bench", "--json", "-n", "300", "--clients", "1,3", "--rounds", "20",
		"--subscribers", "25", "--stalled", "2", "--warmup", "10", "--plot", plot}, args...)
	code, out, errOut := commy(t, args...)
	if code != 0 {
		t.Fatalf("commy bench: exit %d: %s", code, errOut)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(svg), "<svg") || !strings.Contains(string(svg), "fanout, 25 subscribers") {
		t.Errorf("--plot wrote no SVG with the fanout panel (%d bytes)", len(svg))
	}
	return rep
}

// checkResults checks that every scenario was measured on system as asked.
func checkResults(t *testing.T, rep benchReport, system string, scenarios []string) {
	t.Helper()
	got := map[string]bench.Result{}
	for _, r := range rep.Results {
		if r.System == system {
			got[r.Key()] = r
		}
	}
	for _, sc := range scenarios {
		want := []string{sc + "/1/0", sc + "/3/0"}
		ops := int64(300)
		switch sc {
		case bench.ScenarioNotify:
			want, ops = []string{sc + "/1/1"}, 20
		case bench.ScenarioFanout:
			want, ops = []string{sc + "/1/25"}, 20
		}
		for _, k := range want {
			r, ok := got[k]
			if !ok {
				t.Errorf("%s: no result for %s", system, k)
				continue
			}
			if r.Ops != ops || r.OpsPerSec <= 0 || r.P50Micros <= 0 || r.P50Micros > r.P99Micros || r.P99Micros > r.P999Micros || r.P999Micros > r.MaxMicros {
				t.Errorf("%s %s: implausible result %+v", system, k, r)
			}
		}
	}
}

// TestBench runs `commy bench` against a real broker and, when redis-server
// is installed, a real Redis in the same run.
func TestBench(t *testing.T) {
	sock := startBroker(t)
	t.Setenv("COMMY_SOCKET", sock)

	t.Run("commy", func(t *testing.T) {
		rep := benchRun(t)
		checkResults(t, rep, "commy", bench.Scenarios)
		if len(rep.Ratios) != 0 || rep.Machine.CommyVersion == "" || rep.Machine.CPUs < 1 {
			t.Errorf("report without Redis: ratios %v, machine %+v", rep.Ratios, rep.Machine)
		}
		// The tenant made for the run is gone again.
		code, out, errOut := commy(t, "tenants", "--json")
		if code != 0 || strings.Contains(out, "commy-bench-") {
			t.Errorf("tenants after the run: exit %d, %s %s", code, out, errOut)
		}
	})

	t.Run("redis", func(t *testing.T) {
		rsock := testutil.StartRedis(t)
		rep := benchRun(t, "--redis", rsock)
		checkResults(t, rep, "commy", bench.Scenarios)
		checkResults(t, rep, "redis", []string{bench.ScenarioRead, bench.ScenarioWrite, bench.ScenarioNotify, bench.ScenarioFanout})
		for _, r := range rep.Results {
			if r.System == "redis" && (r.Scenario == bench.ScenarioMappedRead || r.Scenario == bench.ScenarioOpen) {
				t.Errorf("redis has no %s, yet it was measured", r.Scenario)
			}
		}
		var ms []string
		for _, r := range rep.Ratios {
			ms = append(ms, r.Measurement)
			if r.P50 <= 0 || r.OpsPerSec <= 0 {
				t.Errorf("ratio %+v", r)
			}
		}
		want := []string{"read, 1 client", "read, 3 clients", "write, 1 client", "write, 3 clients", "notify, 1 subscriber", "fanout, 25 subscribers"}
		if !slices.Equal(ms, want) {
			t.Errorf("ratios for %q, want %q", ms, want)
		}
		if rep.Machine.RedisVersion == "" {
			t.Error("no Redis version in the report")
		}
		if rep.Config.Alternate != 4 {
			t.Errorf("config.alternate %d, want the default 4", rep.Config.Alternate)
		}
		// The table names both systems and the ratios.
		code, out, errOut := commy(t, "bench", "-n", "50", "--clients", "1", "-t", "read,write", "--redis", rsock)
		if code != 0 || !strings.Contains(out, "| read, 1 client ") || !strings.Contains(out, "commy / Redis") {
			t.Errorf("table: exit %d:\n%s%s", code, out, errOut)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"bench", "-t", "read,nope"}, ExitUsage, `unknown scenario "nope"`},
			{[]string{"bench", "--clients", "0"}, ExitUsage, "--clients"},
			{[]string{"bench", "--plot", "x.png"}, ExitUsage, "FILE.svg"},
			{[]string{"bench", "--alternate", "0"}, ExitUsage, "--alternate"},
			{[]string{"bench", "-n", "10", "-t", "read", "--redis", filepath.Join(t.TempDir(), "none.sock")}, ExitUnreachable, "no Redis at"},
			{[]string{"bench", "--socket", filepath.Join(t.TempDir(), "none.sock")}, ExitUnreachable, "no broker at"},
		} {
			code, _, errOut := commy(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("%v: exit %d, %q; want exit %d with %q", tc.args, code, errOut, tc.code, tc.msg)
			}
		}
	})
}
