package cli

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestBenchVariants checks the table of variants: the kernel first and only
// it, the --offload=off variant asking for exactly that, and every TUN
// variant on a link of its own, so that all can run side by side.
func TestBenchVariants(t *testing.T) {
	if !benchVariants[0].kernel {
		t.Errorf("the first variant is %q: want the kernel, the baseline", benchVariants[0].name)
	}
	tuns, nets := map[string]string{}, map[netip.Prefix]string{}
	for i, v := range benchVariants {
		if i > 0 && v.kernel {
			t.Errorf("%s is a second kernel variant", v.name)
		}
		args := v.args("/proc/1/ns/net", "")
		if !slices.Equal(args[:len(v.cmd)], v.cmd) || !strings.Contains(strings.Join(args, " "), "--serve "+benchServices) {
			t.Errorf("%s: args %q: want its command %q and the bench's apps", v.name, args, v.cmd)
		}
		if v.kernel {
			continue
		}
		host := netip.MustParsePrefix(v.hostCIDR)
		if !host.Contains(netip.MustParseAddr(v.addr)) || host.Addr().String() == v.addr {
			t.Errorf("%s: the apps' address %s is not the far end of %s", v.name, v.addr, host)
		}
		if other, dup := tuns[v.tun]; dup {
			t.Errorf("%s and %s share the TUN name %s", v.name, other, v.tun)
		}
		if other, dup := nets[host.Masked()]; dup {
			t.Errorf("%s and %s share the prefix %s", v.name, other, host.Masked())
		}
		tuns[v.tun], nets[host.Masked()] = v.name, v.name
	}
	off := slices.IndexFunc(benchVariants, func(v benchVariantSpec) bool { return v.key == "ustack_offload_off" })
	if off < 0 {
		t.Error("no ustack --offload=off variant")
	} else if !slices.Equal(benchVariants[off].cmd, []string{"up", "--offload=off"}) {
		t.Errorf("the --offload=off variant runs %q, want ustack up --offload=off", benchVariants[off].cmd)
	}
	ref := slices.IndexFunc(benchVariants, func(v benchVariantSpec) bool { return v.key == "fdbased" })
	if ref < 0 || benchVariants[ref].cmd[0] != benchRefArg {
		t.Errorf("no variant runs the reference peer (%s)", benchRefArg)
	}
}

// TestBenchTable feeds made-up samples through tabulate and printTable: a
// ratio for every variant but the kernel, none where the kernel has no
// value, and a column per variant.
func TestBenchTable(t *testing.T) {
	var variants []*benchVariant
	res := &benchResults{Reps: 2, MTU: benchMTU, samples: map[string]map[string][]float64{}}
	for i, spec := range benchVariants {
		variants = append(variants, &benchVariant{benchVariantSpec: spec})
		res.Variants = append(res.Variants, benchVariantInfo{Key: spec.key, Name: spec.name, Baseline: spec.kernel})
		res.samples[spec.key] = map[string][]float64{}
		for _, m := range benchMetrics {
			if m.userspaceOnly && spec.kernel {
				continue
			}
			// The kernel: 4 and 6, median 5; variant i: its median 5·(i+1).
			x := 5 * float64(i+1)
			res.samples[spec.key][m.key] = []float64{x - 1, x + 1}
		}
	}
	res.tabulate(variants)
	if len(res.Metrics) != len(benchMetrics) {
		t.Fatalf("%d rows, want %d", len(res.Metrics), len(benchMetrics))
	}
	for _, row := range res.Metrics {
		for i, v := range benchVariants {
			s := row.Values[v.key]
			ratio, hasRatio := row.Ratios[v.key]
			switch {
			case v.kernel && row.Key == "idle_conn_kib":
				if s != nil || hasRatio {
					t.Errorf("%s, %s: %+v, ratio %v; want neither", row.Key, v.name, s, ratio)
				}
			case v.kernel:
				if s == nil || s.Median != 5 || s.Min != 4 || s.Max != 6 || hasRatio {
					t.Errorf("%s, %s: %+v, ratio %v (%v); want 5 [4–6] and no ratio", row.Key, v.name, s, ratio, hasRatio)
				}
			case row.Key == "idle_conn_kib":
				if hasRatio {
					t.Errorf("%s, %s: ratio %v without a kernel value", row.Key, v.name, ratio)
				}
			default:
				if ratio != float64(i+1) {
					t.Errorf("%s, %s: ratio %v (%v), want %d", row.Key, v.name, ratio, hasRatio, i+1)
				}
			}
		}
	}

	var out bytes.Buffer
	res.Notes = benchNotes
	res.printTable(&out)
	lines := strings.Split(out.String(), "\n")
	head := strings.Join(strings.Fields(lines[2]), " ")
	if want := "metric unit kernel veth ustack /kernel ustack --offload=off /kernel gVisor fdbased /kernel"; head != want {
		t.Errorf("header %q, want %q", head, want)
	}
	for _, want := range []string{
		"bulk upload (client → server)  Gbit/s  5.00 [4.00–6.00]  10.0 [9.00–11.0]  2.00×",
		"memory per idle connection     KiB     —                 10.0 [9.00–11.0]  —",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("the table has no line like %q:\n%s", want, out.String())
		}
	}
	for _, n := range benchNotes {
		if !strings.Contains(out.String(), n) {
			t.Errorf("note %q missing under the table", n)
		}
	}
}
