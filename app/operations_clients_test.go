package app_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/internal/jsclient"
	"github.com/cartreg/cartreg/registry"
)

// The operations as the JavaScript clients call them: @medplum/core's validateResource
// ($validate) and valueSetExpand, and fhir-kit-client's operation for $expand and $lookup.
func TestOperationsThroughTheJavaScriptClients(t *testing.T) {
	h := apptest.New(t)
	before := h.Count(`SELECT count(*) FROM resource_version`)
	out := jsclient.Run(t, `
import { MedplumClient } from '@medplum/core';
import { Client } from 'fhir-kit-client';

const medplum = new MedplumClient({ baseUrl: process.env.ROOT + '/', fhirUrlPath: 'fhir', fetch: globalThis.fetch });
medplum.setAccessToken(process.env.TOKEN);
const result = {};
result.valid = await medplum.validateResource({ resourceType: 'Patient', name: [{ family: 'Smith', given: ['Alice'] }] });
result.invalid = await medplum.validateResource({ resourceType: 'Patient', birthDate: '1970-13-01' });
result.medplumExpand = await medplum.valueSetExpand({ url: process.env.VALUESET });

const kit = new Client({ baseUrl: process.env.ROOT + '/fhir', customHeaders: { Authorization: 'Bearer ' + process.env.TOKEN } });
result.kitExpand = await kit.operation({ name: '$expand', resourceType: 'ValueSet', method: 'get', input: { url: process.env.VALUESET } });
result.kitLookup = await kit.operation({ name: '$lookup', resourceType: 'CodeSystem', method: 'POST',
  input: { resourceType: 'Parameters', parameter: [{ name: 'system', valueUri: process.env.SYSTEM }, { name: 'code', valueCode: 'imwg-cr' }] } });
console.log(JSON.stringify(result));
`, map[string]string{"ROOT": h.URL, "TOKEN": h.Token(auth.RoleEHR), "VALUESET": registry.ValueSetResponseOf("imwg"),
		"SYSTEM": registry.SystemResponse})

	var got struct {
		Valid, Invalid struct {
			ResourceType string `json:"resourceType"`
			Issue        []struct {
				Severity, Code string
				Expression     []string
			} `json:"issue"`
		}
		MedplumExpand, KitExpand struct {
			ResourceType string `json:"resourceType"`
			Expansion    struct {
				Contains []struct{ Code string } `json:"contains"`
			} `json:"expansion"`
		}
		KitLookup struct {
			Parameter []struct {
				Name        string `json:"name"`
				ValueString string `json:"valueString"`
			} `json:"parameter"`
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Valid.ResourceType != "OperationOutcome" || len(got.Valid.Issue) != 1 || got.Valid.Issue[0].Severity != "information" {
		t.Errorf("validateResource of a valid Patient: %+v", got.Valid)
	}
	if got.Invalid.ResourceType != "OperationOutcome" || len(got.Invalid.Issue) == 0 || got.Invalid.Issue[0].Severity != "error" ||
		!strings.HasPrefix(strings.Join(got.Invalid.Issue[0].Expression, ","), "Patient.birthDate") {
		t.Errorf("validateResource of an invalid Patient: %+v", got.Invalid)
	}
	for name, vs := range map[string]struct {
		ResourceType string `json:"resourceType"`
		Expansion    struct {
			Contains []struct{ Code string } `json:"contains"`
		} `json:"expansion"`
	}{"@medplum/core valueSetExpand": got.MedplumExpand, "fhir-kit-client operation $expand": got.KitExpand} {
		var codes []string
		for _, c := range vs.Expansion.Contains {
			codes = append(codes, c.Code)
		}
		if vs.ResourceType != "ValueSet" || !strings.Contains(strings.Join(codes, " "), "imwg-cr") || strings.Contains(strings.Join(codes, " "), "lugano") {
			t.Errorf("%s: %+v", name, vs)
		}
	}
	display := ""
	for _, p := range got.KitLookup.Parameter {
		if p.Name == "display" {
			display = p.ValueString
		}
	}
	if display == "" {
		t.Errorf("fhir-kit-client $lookup: %+v", got.KitLookup)
	}
	if after := h.Count(`SELECT count(*) FROM resource_version`); after != before {
		t.Errorf("$validate wrote %d versions", after-before)
	}
}
