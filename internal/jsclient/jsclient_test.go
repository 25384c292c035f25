package jsclient_test

import (
	"strings"
	"testing"

	"github.com/cartreg/cartreg/internal/jsclient"
)

// TestPinnedClientsLoad checks that the pinned packages install and import, so a failure in
// a conformance test is the server's and not the harness's.
func TestPinnedClientsLoad(t *testing.T) {
	out := jsclient.Run(t, `
import { Client } from 'fhir-kit-client';
import { MedplumClient } from '@medplum/core';
const c = new Client({ baseUrl: process.env.BASE });
console.log(typeof c.compartmentSearch, typeof MedplumClient.prototype.validateResource, c.baseUrl);
`, map[string]string{"BASE": "http://example.test/fhir"})
	if got, want := strings.TrimSpace(string(out)), "function function http://example.test/fhir"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
