package fhir

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCheckArrays covers the scanner's edges: escapes in keys and strings, nesting, numbers
// and literals as items, and malformed JSON, which it must leave to the parser.
func TestCheckArrays(t *testing.T) {
	l := ResourceLimits{MaxArrayLength: 3}
	for body, want := range map[string]string{
		`{"resourceType":"Patient","a":[1,2,3]}`:                           "",
		`{"resourceType":"Patient","a":[1,2.5e3,true,null]}`:               "Patient.a",
		`{"resourceType":"Patient","x":"[1,2,3,4]","a":["]","\"",","]}`:    "",
		`{"resourceType":"Patient","b\"k":[{},{},{},{}]}`:                  `Patient.b"k`,
		`{"c":[{"d":[1]},{"d":[1,2,3,4]}],"resourceType":"Bundle"}`:        "Bundle.c[1].d",
		`{"resourceType":"Bundle","entry":[{},{},{},{}]}`:                  "", // exempt
		`{"resourceType":"Bundle","entry":[{"resource":{"x":[1,2,3,4]}}]}`: "Bundle.entry[0].resource.x",
		`[1,2,3,4]`:  "Resource",
		`{"a":[1,2,`: "",
		`]]]}}}`:     "",
		`{"a":"\`:    "",
		``:           "",
	} {
		err := l.checkArrays([]byte(body), ".entry")
		var o *Outcome
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", body, err)
		case want != "" && (!errors.As(err, &o) || len(o.Issues[0].Expression) != 1 || o.Issues[0].Expression[0] != want):
			t.Errorf("%s: %v, want an issue at %s", body, err, want)
		case want != "" && !strings.Contains(o.Issues[0].Diagnostics, "max-array-length"):
			t.Errorf("%s: %s does not name the limit", body, o.Issues[0].Diagnostics)
		}
	}
}

// A limit becomes PostgreSQL's setting in whole milliseconds, never rounded down to 0, which
// PostgreSQL reads as no limit at all.
func TestStatementTimeoutSetting(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0", -time.Second: "0", 500 * time.Microsecond: "1ms",
		1500 * time.Microsecond: "1ms", 10 * time.Second: "10000ms"} {
		if got := StatementTimeoutSetting(d); got != want {
			t.Errorf("StatementTimeoutSetting(%v) = %q, want %q", d, got, want)
		}
	}
}
