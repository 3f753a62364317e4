package cli

import (
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/commy/commy/internal/bench"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// plotPercentiles are the percentiles drawn for each measurement.
var plotPercentiles = []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99}

// nines places percentile p on the x axis: 0 for 0, 1 for 90, 2 for 99...
func nines(p float64) float64 { return -math.Log10(1 - p/100) }

// ninesTicks labels the x axis with percentiles.
type ninesTicks struct{}

func (ninesTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, p := range []float64{0, 50, 90, 99, 99.9, 99.99} {
		if x := nines(p); x >= lo-1e-9 && x <= hi+1e-9 {
			ts = append(ts, plot.Tick{Value: x, Label: strconv.FormatFloat(p, 'f', -1, 64)})
		}
	}
	return ts
}

// writePlot draws one panel per measurement, latency (log scale) against
// percentile, a line for each system, into an SVG file.
func writePlot(path string, rs []bench.Result) error {
	var keys []string
	byKey := map[string][]bench.Result{}
	for _, r := range rs {
		if len(r.Latencies) == 0 {
			continue
		}
		if _, ok := byKey[r.Key()]; !ok {
			keys = append(keys, r.Key())
		}
		byKey[r.Key()] = append(byKey[r.Key()], r)
	}
	if len(keys) == 0 {
		return errNoResults
	}
	const cols = 2
	rows := (len(keys) + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	systems := map[string]int{}
	for i, k := range keys {
		p := plot.New()
		p.Title.Text = byKey[k][0].Label()
		p.X.Label.Text = "percentile"
		p.Y.Label.Text = "latency (us)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.X.Tick.Marker = ninesTicks{}
		p.Add(plotter.NewGrid())
		p.Legend.Top = false
		p.Legend.Left = true
		for _, r := range byKey[k] {
			var xys plotter.XYs
			for _, q := range plotPercentiles {
				if q > 0 && 100/(100-q) > float64(len(r.Latencies)) {
					break // not enough samples for this percentile
				}
				us := float64(bench.Percentile(r.Latencies, q)) / 1e3
				xys = append(xys, plotter.XY{X: nines(q), Y: math.Max(us, 1e-3)})
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return fmt.Errorf("cli: plot: %w", err)
			}
			ci, ok := systems[r.System]
			if !ok {
				ci = len(systems)
				systems[r.System] = ci
			}
			line.Color, points.Color = plotutil.Color(ci), plotutil.Color(ci)
			points.Shape = plotutil.Shape(ci)
			p.Add(line, points)
			p.Legend.Add(r.System, line, points)
		}
		plots[i/cols][i%cols] = p
	}
	for i := len(keys); i < rows*cols; i++ {
		plots[i/cols][i%cols] = nil
	}
	const tileW, tileH = 4 * vg.Inch, 3 * vg.Inch
	img := vgsvg.New(cols*tileW, vg.Length(rows)*tileH)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for j := range plots {
		for i, p := range plots[j] {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cli: plot: %w", err)
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("cli: plot: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cli: plot: %w", err)
	}
	return nil
}
