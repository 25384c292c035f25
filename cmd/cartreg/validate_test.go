package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Every command checks every setting before it touches a database: a bad -base-url on
// `schedule run` (which would date digests' fullUrls wrongly) is refused like serve's.
func TestEveryCommandValidatesItsSettings(t *testing.T) {
	clearCartregEnv(t)
	for _, args := range [][]string{
		{"schedule", "run", "-base-url", "ftp://registry.example/fhir"},
		{"serve", "-base-url", "registry.example"},
		{"schedule", "run", "-follow-up-years", "0"},
		{"demo", "-follow-up-time-zone", "Mars/Olympus"},
		{"import", "-db-max-conns", "-1", "x.ndjson"},
		{"migrate", "status", "-log-level", "loud"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), args, &bytes.Buffer{}, &stderr)
		if err == nil {
			t.Errorf("%s: accepted", strings.Join(args, " "))
			continue
		}
		// Refused before the database: no embedded cluster was looked for or started.
		if strings.Contains(stderr.String(), "starting") || strings.Contains(err.Error(), "database") {
			t.Errorf("%s: refused late: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
	}
}
