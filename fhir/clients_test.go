package fhir_test

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/internal/jsclient"
)

// fhir-kit-client's compartmentSearch, as a hospital's app calls it, finds a patient's
// Observations of one code through GET /fhir/Patient/{id}/Observation, and follows the
// server's next links to the end.
func TestFhirKitClientCompartmentSearch(t *testing.T) {
	s := newTestServer(t)
	create := func(body string) string {
		t.Helper()
		return s.expect(s.do("POST", "/"+strings.SplitN(strings.Split(body, `"resourceType":"`)[1], `"`, 2)[0], body), http.StatusCreated).json(t)["id"].(string)
	}
	patient := create(`{"resourceType":"Patient","name":[{"family":"Lovelace"}]}`)
	other := create(`{"resourceType":"Patient","name":[{"family":"Turing"}]}`)
	obs := func(subject, code string) string {
		return create(fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/%s"}}`, code, subject))
	}
	var want []string
	for range 3 {
		want = append(want, obs(patient, "29463-7"))
	}
	sort.Strings(want)
	obs(patient, "8302-2")
	obs(other, "29463-7")

	out := jsclient.Run(t, `
import { Client } from 'fhir-kit-client';
const client = new Client({ baseUrl: process.env.BASE, customHeaders: { Authorization: 'Bearer ' + process.env.TOKEN } });
let bundle = await client.compartmentSearch({
  resourceType: 'Observation',
  compartment: { resourceType: 'Patient', id: process.env.PATIENT },
  searchParams: { code: 'http://loinc.org|29463-7', _count: 2 },
});
const ids = [];
for (;;) {
  if (bundle.resourceType !== 'Bundle' || bundle.type !== 'searchset') throw new Error('not a searchset: ' + JSON.stringify(bundle));
  for (const e of bundle.entry || []) ids.push(e.resource.id);
  if (!bundle.link.some((l) => l.relation === 'next')) break;
  bundle = await client.nextPage({ bundle });
}
console.log(ids.join('\n'));
`, map[string]string{"BASE": s.base, "TOKEN": s.h.Token(auth.RoleAdmin), "PATIENT": patient})
	got := strings.Fields(string(out))
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Fatalf("compartmentSearch found %v, want %v", got, want)
	}
}
