package web

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/cartreg/cartreg/registry"
)

// funcs are the templates' helpers: how the pages write figures that may be missing.
var funcs = template.FuncMap{
	"list":       func(s ...string) []string { return s },
	"visitArgs":  visitArgs,
	"trimPrefix": strings.TrimPrefix,
	"max":        func(a, b string) string { return max(a, b) },
	"add":        func(a, b int) int { return a + b },
	"deref": func(v any) any {
		switch x := v.(type) {
		case *int:
			if x != nil {
				return *x
			}
		case *time.Time:
			if x != nil {
				return *x
			}
		}
		return ""
	},
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"span":  span,
	// count is a count the small-cell rules may have hidden.
	"count": func(n *int, min int) string {
		if n == nil {
			return fmt.Sprintf("<%d", min)
		}
		return fmt.Sprint(*n)
	},
	"rate": func(p registry.Proportion) string {
		if p.Rate == nil {
			return "hidden"
		}
		s := fmt.Sprintf("%.0f%%", *p.Rate*100)
		if p.Lower != nil && p.Upper != nil {
			s += fmt.Sprintf(" (%.0f–%.0f%%)", *p.Lower*100, *p.Upper*100)
		}
		return s
	},
	"days": func(d *float64) string {
		if d == nil {
			return "not reached"
		}
		return fmt.Sprintf("%.0f", *d)
	},
	"landmark": func(m map[string]*registry.Estimate, day string) string {
		e := m[day]
		if e == nil || e.Survival == nil {
			return "—"
		}
		s := fmt.Sprintf("%.0f%%", *e.Survival*100)
		if e.Lower != nil && e.Upper != nil {
			s += fmt.Sprintf(" (%.0f–%.0f%%)", *e.Lower*100, *e.Upper*100)
		}
		return s
	},
	"endpointName": func(e string) string {
		switch e {
		case "pfs":
			return "Progression-free survival"
		case "dor":
			return "Duration of response"
		}
		return "Overall survival"
	},
	// bucketQuery is the work list's query for one bucket; its values are encoded already.
	"bucketQuery": func(f workFilter, bucket string) template.URL {
		f.Bucket = bucket
		return template.URL(f.encode())
	},
}

// span says a setting's duration in words: "1 minute", "90 seconds", "2 hours".
func span(d time.Duration) string {
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	case d >= time.Minute && d%time.Minute == 0:
		return unit(int64(d/time.Minute), "minute")
	default:
		return unit(int64(d.Round(time.Second)/time.Second), "second")
	}
}
