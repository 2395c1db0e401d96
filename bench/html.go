package bench

import (
	"fmt"
	"html/template"
	"io"
	"strings"
)

// chartBar is one group of bars: Basalt's and etcd's value of a metric.
type chartBar struct {
	Label        string
	Basalt, Etcd float64
	Unit         string
}

// writeHTML writes a self-contained page: the comparison table and bar
// charts (inline SVG) of throughput and latency percentiles.
func writeHTML(w io.Writer, c *Comparison) error {
	b, e := c.Basalt.Latency, c.Etcd.Latency
	data := struct {
		C          *Comparison
		Params     string
		Rounds     string
		Throughput template.HTML
		Latency    template.HTML
	}{
		C:          c,
		Params:     formatParams(c.Params),
		Rounds:     formatRatios(c.RoundRatios),
		Throughput: svgBars("throughput (requests/s, higher is better)", []chartBar{{"throughput", c.Basalt.Throughput, c.Etcd.Throughput, "/s"}}),
		Latency: svgBars("latency (ms, lower is better)", []chartBar{
			{"p50", b.P50, e.P50, "ms"}, {"p90", b.P90, e.P90, "ms"}, {"p99", b.P99, e.P99, "ms"}, {"p99.9", b.P999, e.P999, "ms"},
		}),
	}
	return pageTemplate.Execute(w, data)
}

// svgBars draws grouped horizontal bars, Basalt and etcd side by side.
func svgBars(title string, bars []chartBar) template.HTML {
	const width, labelW, rowH = 640.0, 70.0, 44.0
	maxV := 0.0
	for _, b := range bars {
		maxV = max(maxV, b.Basalt, b.Etcd)
	}
	if maxV == 0 {
		maxV = 1
	}
	var sb strings.Builder
	h := 30 + rowH*float64(len(bars)) + 10
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`, width+120, h)
	fmt.Fprintf(&sb, `<text x="0" y="16" font-weight="bold">%s</text>`, template.HTMLEscapeString(title))
	for i, b := range bars {
		y := 30 + rowH*float64(i)
		fmt.Fprintf(&sb, `<text x="0" y="%.0f">%s</text>`, y+22, template.HTMLEscapeString(b.Label))
		for j, v := range []struct {
			name  string
			val   float64
			color string
		}{{"basalt", b.Basalt, "#2b6cb0"}, {"etcd", b.Etcd, "#a0aec0"}} {
			bw := (width - labelW) * v.val / maxV
			by := y + float64(j)*18
			fmt.Fprintf(&sb, `<rect x="%.0f" y="%.0f" width="%.1f" height="16" fill="%s"/>`, labelW, by, bw, v.color)
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.0f">%s %.3g%s</text>`, labelW+bw+4, by+12, v.name, v.val, b.Unit)
		}
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

var pageTemplate = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>basalt vs etcd: {{.C.Workload}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 12px;text-align:right;border-bottom:1px solid #ddd}th:first-child,td:first-child{text-align:left}</style>
</head><body>
<h1>basalt vs etcd 3.7.3: {{.C.Workload}}</h1>
<p>{{.Params}}<br>clients {{.C.Basalt.Clients}}, conns {{.C.Basalt.Conns}}, {{len .C.Rounds}} round(s); {{.C.Machine}}; {{.C.Date}}</p>
<table>
<tr><th></th><th>basalt</th><th>etcd</th><th>basalt/etcd</th></tr>
<tr><td>throughput/s</td><td>{{printf "%.1f" .C.Basalt.Throughput}}</td><td>{{printf "%.1f" .C.Etcd.Throughput}}</td><td>{{printf "%.2f" .C.ThroughputRatio}}x</td></tr>
<tr><td>p50 ms</td><td>{{printf "%.3f" .C.Basalt.Latency.P50}}</td><td>{{printf "%.3f" .C.Etcd.Latency.P50}}</td><td>{{printf "%.2f" (index .C.LatencyRatio "p50")}}x</td></tr>
<tr><td>p90 ms</td><td>{{printf "%.3f" .C.Basalt.Latency.P90}}</td><td>{{printf "%.3f" .C.Etcd.Latency.P90}}</td><td>{{printf "%.2f" (index .C.LatencyRatio "p90")}}x</td></tr>
<tr><td>p99 ms</td><td>{{printf "%.3f" .C.Basalt.Latency.P99}}</td><td>{{printf "%.3f" .C.Etcd.Latency.P99}}</td><td>{{printf "%.2f" (index .C.LatencyRatio "p99")}}x</td></tr>
<tr><td>p99.9 ms</td><td>{{printf "%.3f" .C.Basalt.Latency.P999}}</td><td>{{printf "%.3f" .C.Etcd.Latency.P999}}</td><td>{{printf "%.2f" (index .C.LatencyRatio "p99.9")}}x</td></tr>
<tr><td>max ms</td><td>{{printf "%.3f" .C.Basalt.Latency.Max}}</td><td>{{printf "%.3f" .C.Etcd.Latency.Max}}</td><td>{{printf "%.2f" (index .C.LatencyRatio "max")}}x</td></tr>
<tr><td>errors</td><td>{{.C.Basalt.Errors}}</td><td>{{.C.Etcd.Errors}}</td><td></td></tr>
{{if .C.ServerCPURatio}}<tr><td>server CPU µs/request</td><td>{{printf "%.1f" .C.Basalt.ServerCPUPerRequest}}</td><td>{{printf "%.1f" .C.Etcd.ServerCPUPerRequest}}</td><td>{{printf "%.2f" .C.ServerCPURatio}}x</td></tr>{{end}}
</table>
{{if gt (len .C.RoundRatios) 1}}<p>throughput ratio per round: {{.Rounds}}</p>{{end}}
<p>{{.Throughput}}</p>
<p>{{.Latency}}</p>
</body></html>
`))
