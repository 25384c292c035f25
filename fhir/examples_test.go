package fhir_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/internal/shareddata"
	"github.com/cartreg/cartreg/outbox"
)

func loadExamples(t *testing.T) map[string][]byte {
	t.Helper()
	files := shareddata.Glob(t, "fhir-r4/examples/*.json")
	out := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = raw
	}
	return out
}

// withoutMeta decodes a resource for comparison, leaving out what the server sets itself.
func withoutMeta(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	delete(m, "id")
	delete(m, "meta")
	return m
}

// Every official example that google/fhir accepts goes through create, read, update, search
// by _id and delete; every one it rejects gets a located 400 and writes nothing.
func TestEveryR4ExampleRoundTrips(t *testing.T) {
	t.Parallel()
	examples := loadExamples(t)
	// The example Subscription's endpoint is allowed, so that it is accepted; nothing here
	// delivers notifications.
	endpoints, err := outbox.ParseAllowList([]string{"https://biliwatch.com/customers/"})
	if err != nil {
		t.Fatal(err)
	}
	s := newAppTestServer(t, func(c *app.Config) { c.Subscriptions.Endpoints = endpoints })
	names := make([]string, 0, len(examples))
	for n := range examples {
		names = append(names, n)
	}
	sort.Strings(names)

	var accepted, rejected int
	for _, name := range names {
		raw := examples[name]
		var head struct{ ResourceType string }
		if err := json.Unmarshal(raw, &head); err != nil || head.ResourceType == "" {
			t.Errorf("%s: not a resource", name)
			continue
		}
		typ := head.ResourceType
		if _, err := fhir.Parse(raw); err != nil {
			rejected++
			versions := s.countRows("resource_version")
			r := s.do("POST", "/"+typ, string(raw))
			if r.status != http.StatusBadRequest {
				t.Errorf("%s: rejected by the parser but the server answered %d", name, r.status)
				continue
			}
			located := false
			for _, is := range r.json(t)["issue"].([]any) {
				if len(asSlice(is.(map[string]any)["expression"])) > 0 {
					located = true
				}
			}
			if !located {
				t.Errorf("%s: 400 without a location: %s", name, r.body)
			}
			if s.countRows("resource_version") != versions {
				t.Errorf("%s: a refused create wrote something", name)
			}
			continue
		}
		accepted++
		if typ == "AuditEvent" {
			// The audit trail is the server's to write: clients' AuditEvents are refused.
			if r := s.do("POST", "/"+typ, string(raw)); r.status != http.StatusMethodNotAllowed {
				t.Errorf("%s: create answered %d, want 405", name, r.status)
			}
			continue
		}

		created := s.do("POST", "/"+typ, string(raw))
		if created.status != http.StatusCreated {
			t.Errorf("%s: create answered %d: %s", name, created.status, created.body)
			continue
		}
		id := created.json(t)["id"].(string)
		read := s.do("GET", "/"+typ+"/"+id, "")
		if read.status != http.StatusOK {
			t.Errorf("%s: read answered %d", name, read.status)
			continue
		}
		got, want := withoutMeta(t, read.body), withoutMeta(t, raw)
		if typ == "Subscription" {
			// The server, not the client, sets a Subscription's status: it activates the
			// rest-hooks it accepts.
			delete(got, "status")
			delete(want, "status")
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: read back differs from what was sent\n got: %s\nwant: %s", name, read.body, raw)
			continue
		}

		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		body["id"] = id
		updated, _ := json.Marshal(body)
		// One version more than the read: a Subscription the server activated is at 2 already,
		// and the update, requested again, is activated again and answered as stored.
		readVersion, _ := strconv.Atoi(read.json(t)["meta"].(map[string]any)["versionId"].(string))
		wantETag := fmt.Sprintf(`W/"%d"`, readVersion+1)
		if typ == "Subscription" && body["status"] == "requested" {
			wantETag = fmt.Sprintf(`W/"%d"`, readVersion+2)
		}
		if r := s.do("PUT", "/"+typ+"/"+id, string(updated)); r.status != http.StatusOK || r.header.Get("ETag") != wantETag {
			t.Errorf("%s: update answered %d %s", name, r.status, r.header.Get("ETag"))
			continue
		}

		search := s.do("GET", "/"+typ+"?_id="+id, "")
		if search.status != http.StatusOK {
			t.Errorf("%s: search by _id answered %d: %s", name, search.status, search.body)
			continue
		}
		entries := asSlice(search.json(t)["entry"])
		if len(entries) != 1 || !strings.HasSuffix(entries[0].(map[string]any)["fullUrl"].(string), "/"+typ+"/"+id) {
			t.Errorf("%s: search by _id found %d entries", name, len(entries))
			continue
		}

		if r := s.do("DELETE", "/"+typ+"/"+id, ""); r.status != http.StatusNoContent {
			t.Errorf("%s: delete answered %d", name, r.status)
		}
		if r := s.do("GET", "/"+typ+"/"+id, ""); r.status != http.StatusGone {
			t.Errorf("%s: read after delete answered %d", name, r.status)
		}
	}
	t.Logf("%d examples round-tripped, %d rejected with located 400s", accepted, rejected)
	if accepted < 650 {
		t.Fatalf("only %d examples accepted: the parser or the data changed", accepted)
	}
}
