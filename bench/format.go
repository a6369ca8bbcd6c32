package bench

import (
	"fmt"
	"io"
	"strings"
)

// WriteText prints the result for a person: what ran, throughput, the
// latency histogram, and the workload's own figures.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	desc := r.Workload
	if r.Stale {
		desc += " (stale)"
	}
	fmt.Fprintf(&b, "workload     %s, %d clients, %d concurrent", desc, r.Clients, r.Concurrency)
	if r.ValueSize > 0 {
		fmt.Fprintf(&b, ", %d-byte values over %d keys", r.ValueSize, r.Keys)
	}
	b.WriteString("\n")
	state := ""
	if r.Partial {
		state = "  (interrupted: partial result)"
	}
	fmt.Fprintf(&b, "operations   %d in %.2fs, %d failed%s\n", r.Ops, r.Elapsed, r.Errors, state)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first error  %s\n", r.FirstError)
	}
	fmt.Fprintf(&b, "throughput   %.0f ops/s\n", r.Throughput)
	writeLatency(&b, "latency", r.Latency)
	if r.Handover != nil {
		writeLatency(&b, "hand-over", *r.Handover)
	}
	if r.Delivery != nil {
		writeLatency(&b, "delivery", *r.Delivery)
	}
	for _, k := range sortedExtra(r.Extra) {
		fmt.Fprintf(&b, "%-12s %s\n", k, trimFloat(r.Extra[k]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeLatency(b *strings.Builder, name string, l Latency) {
	fmt.Fprintf(b, "%-12s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (ms, %d samples)\n", name,
		trimFloat(l.P50), trimFloat(l.P90), trimFloat(l.P99), trimFloat(l.P999), trimFloat(l.Max), l.Count)
}

// trimFloat prints with 3 significant decimals, no trailing zeros.
func trimFloat(f float64) string {
	s := fmt.Sprintf("%.3f", f)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
