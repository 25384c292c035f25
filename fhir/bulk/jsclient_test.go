package bulk_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir/bulk"
	"github.com/cartreg/cartreg/internal/jsclient"
)

// Medplum's client runs the whole bulk flow itself (kick-off with Prefer: respond-async,
// polling the status URL until the manifest), against the server with its worker running.
func TestMedplumBulkExport(t *testing.T) {
	dir := t.TempDir()
	h := apptest.New(t, apptest.WithConfig(func(c *app.Config) {
		c.Export = bulk.Config{Dir: dir, PageSize: 4, Poll: 50 * time.Millisecond}
	}))
	loadExamples(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); h.App.Export.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })

	out := jsclient.Run(t, `
import { MedplumClient } from '@medplum/core';
const medplum = new MedplumClient({ baseUrl: process.env.BASE, fhirUrlPath: 'fhir', fetch });
medplum.setAccessToken(process.env.TOKEN);
const manifest = await medplum.bulkExport('', 'Patient,Observation', undefined, { pollStatusOnAccepted: true, pollStatusPeriod: 100 });
const counts = {};
for (const f of manifest.output) {
  const res = await fetch(f.url, { headers: { Authorization: 'Bearer ' + process.env.TOKEN } });
  const text = await res.text();
  counts[f.type] = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)).filter((r) => r.resourceType === f.type).length;
}
console.log(JSON.stringify({ requiresAccessToken: manifest.requiresAccessToken, counts }));
`, map[string]string{"BASE": h.URL + "/", "TOKEN": h.Token(auth.RoleEHR)})
	var got struct {
		RequiresAccessToken bool           `json:"requiresAccessToken"`
		Counts              map[string]int `json:"counts"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	all := dbCounts(t, h)
	if !got.RequiresAccessToken {
		t.Error("the manifest does not say files need the token")
	}
	sameCounts(t, got.Counts, map[string]int{"Patient": all["Patient"], "Observation": all["Observation"]})
}
