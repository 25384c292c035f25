package fhir

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/examples"
	"github.com/cartreg/cartreg/fhir/searchparam"
)

// The fuzz targets run without a database: they cover what a request's bytes reach before
// any SQL is sent. Under plain `go test` each runs its seed corpus; `make fuzz` runs each
// with -fuzz. Their property is the one every handler owes a client: no panic, and every
// error an *Outcome with a 4xx status.

// requireClientError fails unless err is nil or an *Outcome with a 4xx status.
func requireClientError(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var o *Outcome
	if !errors.As(err, &o) {
		t.Fatalf("%s: an error that is not an Outcome (would be a 500): %T %v", what, err, err)
	}
	if o.Status < 400 || o.Status >= 500 {
		t.Fatalf("%s: status %d, want 4xx: %v", what, o.Status, err)
	}
	if len(o.Issues) == 0 {
		t.Fatalf("%s: an Outcome without issues", what)
	}
}

func fuzzBundleProcessor() *BundleProcessor {
	store := NewStore(nil, searchparam.Default(), func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) })
	return NewBundleProcessor(store, NewSearcher(store, searchparam.Default(), ""), BundleConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// FuzzBundle reads a transaction or batch Bundle as POST /fhir does before it opens a
// transaction: the envelope, each entry's target, its JSON Patch, its local references, and
// the validation of its resource.
func FuzzBundle(f *testing.F) {
	files, err := fs.Glob(examples.Bundles, "*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no example Bundles: %v", err)
	}
	for _, name := range files {
		raw, err := fs.ReadFile(examples.Bundles, name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, s := range []string{
		`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient?name=x"}}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","birthDate":"1970-01-01"},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=s|1"}},` +
			`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:1"}},"request":{"method":"PUT","url":"Observation?identifier=a|b","ifMatch":"W/\"1\""}}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9hY3RpdmUiLCJ2YWx1ZSI6ZmFsc2V9XQ=="},"request":{"method":"PATCH","url":"Patient/1"}}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient?identifier=x"}}]}`,
		`{"resourceType":"Bundle","type":"document"}`,
		`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"TRACE","url":"x"}},{}]}`,
		`[]`, `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","name":[{"family":1}]},"request":{"method":"POST","url":"Patient"}}]}`,
	} {
		f.Add([]byte(s))
	}
	b := fuzzBundleProcessor()
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, entries, err := b.readBundle(raw)
		requireClientError(t, "reading the Bundle", err)
		for _, e := range entries {
			getTarget(e.url, "http://example.org/fhir")
			if e.method == http.MethodPatch && e.resource != nil {
				_, err := patchFromBinary(e)
				requireClientError(t, e.where()+" patch", e.atEntry(err))
				continue
			}
			if e.resource == nil {
				continue
			}
			collectLocalReferences(e.resource, "resource", func(string, string) {})
			_, err := b.validate(e)
			requireClientError(t, e.where()+" resource", e.atEntry(err))
		}
		if _, err := cloneEntries(entries); err != nil {
			requireClientError(t, "copying the entries", err)
		}
	})
}

// searchSeeds are the queries of the package's tests ("Patient?name=peter"), with the
// server's harder forms added: chains, _has, sorting, includes, paging.
func searchSeeds(f *testing.F) []string {
	seeds := []string{
		"Patient?name=peter&_sort=-birthdate,_id&_count=5",
		"Observation?subject:Patient.name=peter&patient.general-practitioner.name=x",
		"Patient?_has:Observation:patient:_has:AuditEvent:entity:agent=y",
		"Organization?partof.partof.partof.name=x",
		"Observation?_include=Observation:subject:Patient&_revinclude:iterate=Provenance:target&_elements=id,code",
		"Patient?_summary=count&_total=accurate&_cursor=eyJrIjpbXSwidCI6IlBhdGllbnQiLCJpIjoiMSJ9",
		"Observation?value-quantity=ap5.4|http://unitsofmeasure.org|mg&date=sa2020-01-01T00:00:00Z",
		"Task?window=ge2027-01-01&window=le2027-03-31&_lastUpdated=gt2020",
		"Patient?name=a\\,b,c&identifier:not=s|&_id=1,2&_profile=http://x|1",
		"Patient?birthdate:missing=true&name:exact=&_format=json&_pretty=true",
	}
	files, _ := filepath.Glob("*_test.go")
	query := regexp.MustCompile(`"([A-Z][A-Za-z]+\?[^"\s]*)"`)
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range query.FindAllStringSubmatch(string(src), -1) {
			seeds = append(seeds, m[1])
		}
	}
	return seeds
}

// FuzzSearchQuery parses a search as GET /fhir/{type}?… does and builds its SQL statement,
// short of sending it.
func FuzzSearchQuery(f *testing.F) {
	for _, s := range searchSeeds(f) {
		f.Add(s, false)
	}
	f.Add("?_type=Patient,Observation&_lastUpdated=ge2020", true)
	s := fuzzBundleProcessor().search
	f.Fuzz(func(t *testing.T, search string, strict bool) {
		typ, query, _ := strings.Cut(search, "?")
		params, _ := url.ParseQuery(query) // as net/http's URL.Query: a bad pair is dropped
		var types []string
		if typ == "" {
			var err error
			if types, err = parseTypes(params.Get("_type")); err != nil {
				requireClientError(t, "_type", err)
				return
			}
			if types == nil {
				types = ResourceTypes()
			}
		} else if IsResourceType(typ) {
			types = []string{typ}
		} else {
			return // the router answers an unknown type with a 404
		}
		q, err := s.parseSearch(types, params, strict, defaultPageSize, maxPageSize)
		requireClientError(t, "parsing", err)
		if err != nil {
			return
		}
		q.base = "http://example.org/fhir"
		_, _, _, _, err = s.pageQuery(types, q)
		requireClientError(t, "building the statement", err)
	})
}
