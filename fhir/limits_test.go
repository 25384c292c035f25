package fhir_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
)

const jsonPatch = "application/json-patch+json"

// TestPatchAmplification: 17 copies of /name into itself once took 9 s and 1.2 GB for a
// 2 KB body. The copies are now counted as they are applied and stop at the limit.
func TestPatchAmplification(t *testing.T) {
	s := newTestServer(t)
	id := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated).json(t)["id"].(string)
	ops := make([]string, 17)
	for i := range ops {
		ops[i] = `{"op":"copy","from":"/name","path":"/name/-"}`
	}
	amplify := "[" + strings.Join(ops, ",") + "]"
	before := s.countRows("resource_version")

	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	code, diag, _ := outcomeIssue(t, s.expect(s.do("PATCH", "/Patient/"+id, amplify, "Content-Type", jsonPatch), http.StatusRequestEntityTooLarge))
	runtime.ReadMemStats(&m1)
	t.Logf("amplifying patch refused in %v, %d MB allocated", time.Since(start).Round(time.Millisecond), (m1.TotalAlloc-m0.TotalAlloc)>>20)
	if code != "too-costly" || !strings.Contains(diag, "max-patched-size") || !strings.Contains(diag, fmt.Sprint(fhir.DefaultMaxPatchedSize)) {
		t.Errorf("outcome %s: %s", code, diag)
	}

	// The same in a transaction's PATCH entry.
	bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Binary",
		"contentType":"application/json-patch+json","data":%q},"request":{"method":"PATCH","url":"Patient/%s"}}]}`,
		base64.StdEncoding.EncodeToString([]byte(amplify)), id)
	_, diag, _ = outcomeIssue(t, s.expect(s.do("POST", "", bundle), http.StatusRequestEntityTooLarge))
	if !strings.Contains(diag, "max-patched-size") {
		t.Errorf("transaction's patch: %s", diag)
	}

	// Too many operations, however harmless each.
	many := make([]string, fhir.DefaultMaxPatchOperations+1)
	for i := range many {
		many[i] = `{"op":"test","path":"/gender","value":"male"}`
	}
	_, diag, _ = outcomeIssue(t, s.expect(s.do("PATCH", "/Patient/"+id, "["+strings.Join(many, ",")+"]", "Content-Type", jsonPatch), http.StatusUnprocessableEntity))
	if !strings.Contains(diag, "max-patch-operations") || !strings.Contains(diag, "100") {
		t.Errorf("operation count: %s", diag)
	}
	if after := s.countRows("resource_version"); after != before {
		t.Errorf("refused patches wrote %d versions", after-before)
	}

	// Within the limits a copy still works.
	s.expect(s.do("PATCH", "/Patient/"+id, `[{"op":"copy","from":"/name/0","path":"/name/-"}]`, "Content-Type", jsonPatch), http.StatusOK)
}

// TestPatchedSizeSetting: a lower max-patched-size stops a patch that adds a large value,
// and a patch result over it, not only copies.
func TestPatchedSizeSetting(t *testing.T) {
	s := newTestServer(t, func(c *fhir.APIConfig) { c.Limits.MaxPatchedSize = 2000 })
	id := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated).json(t)["id"].(string)
	add := fmt.Sprintf(`[{"op":"add","path":"/name/0/text","value":%q}]`, strings.Repeat("x", 3000))
	_, diag, _ := outcomeIssue(t, s.expect(s.do("PATCH", "/Patient/"+id, add, "Content-Type", jsonPatch), http.StatusRequestEntityTooLarge))
	if !strings.Contains(diag, "2000 bytes") {
		t.Errorf("diagnostics %q do not name the limit", diag)
	}
}

func identifiers(n int) string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf(`{"system":"urn:oid:1.2.3","value":"v%d"}`, i)
	}
	return "[" + strings.Join(ids, ",") + "]"
}

// TestArrayLengthLimit: an array longer than max-array-length is refused before parsing,
// located at the array, in a resource of its own or in a Bundle's entry.
func TestArrayLengthLimit(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		s := newTestServer(t).with(t)
		body := `{"resourceType":"Patient","identifier":` + identifiers(fhir.DefaultMaxArrayLength+1) + `}`
		code, diag, expr := outcomeIssue(t, s.expect(s.do("POST", "/Patient", body), http.StatusRequestEntityTooLarge))
		if code != "too-costly" || !strings.Contains(diag, "max-array-length") || !strings.Contains(diag, "10000") ||
			len(expr) != 1 || expr[0] != "Patient.identifier" {
			t.Errorf("%s %q at %v", code, diag, expr)
		}
	})
	s := newTestServer(t, func(c *fhir.APIConfig) { c.Limits.MaxArrayLength = 50 })
	s.expect(s.do("POST", "/Patient", `{"resourceType":"Patient","identifier":`+identifiers(50)+`}`), http.StatusCreated)
	// resourceType last: the location still names the type.
	_, _, expr := outcomeIssue(t, s.expect(s.do("PUT", "/Patient/p1", `{"id":"p1","identifier":`+identifiers(51)+`,"resourceType":"Patient"}`), http.StatusRequestEntityTooLarge))
	if len(expr) != 1 || expr[0] != "Patient.identifier" {
		t.Errorf("update located at %v", expr)
	}
	given := `["` + strings.Repeat(`a","`, 51) + `b"]`
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
		{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
		{"resource":{"resourceType":"Patient","name":[{"family":"x","given":` + given + `}]},"request":{"method":"POST","url":"Patient"}}]}`
	_, _, expr = outcomeIssue(t, s.expect(s.do("POST", "", bundle), http.StatusRequestEntityTooLarge))
	if len(expr) != 1 || expr[0] != "Bundle.entry[1].resource.name[0].given" {
		t.Errorf("Bundle entry located at %v", expr)
	}
	// Bundle.entry itself answers to bundle-max-entries, not to the array limit.
	entries := strings.Repeat(`{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},`, 60)
	s.expect(s.do("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[`+strings.TrimSuffix(entries, ",")+`]}`), http.StatusOK)
	// A patch may not make an array longer than the limit either.
	id := s.expect(s.do("POST", "/Patient", `{"resourceType":"Patient","identifier":`+identifiers(50)+`}`), http.StatusCreated).json(t)["id"].(string)
	s.expect(s.do("PATCH", "/Patient/"+id, `[{"op":"copy","from":"/identifier/0","path":"/identifier/-"}]`, "Content-Type", jsonPatch), http.StatusRequestEntityTooLarge)
}

// longText is n letters that do not compress, as a real long value would not: PostgreSQL
// compresses an index row before measuring it against the btree limit.
func longText(n int, seed uint64) string {
	b := make([]byte, n)
	for i := range b {
		seed = seed*6364136223846793005 + 1442695040888963407
		b[i] = 'a' + byte(seed>>59)%26
	}
	return string(b)
}

// TestLongIndexValues: an indexed value past the btree row limit (~2,700 bytes) made the
// whole write a 500. Such values are stored, and found by every search that would find
// a short one: string prefix, :exact and :contains, token, uri and reference equality.
func TestLongIndexValues(t *testing.T) {
	s := newTestServer(t)
	family, value := "Q"+longText(10_000, 1), longText(10_000, 2)
	canonical := "http://example.org/ValueSet/" + longText(5_000, 3)
	absolute := "http://elsewhere.example/fhir/Patient/" + longText(4_000, 4) + "/x"
	patient := func(family, value string) string {
		return fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":%q}],"identifier":[{"system":"urn:oid:1.2.3","value":%q}],
			"address":[{"line":[%q]}]}`, family, value, family)
	}
	id := s.expect(s.do("POST", "/Patient", patient(family, value)), http.StatusCreated).json(t)["id"].(string)
	s.expect(s.do("POST", "/ValueSet", fmt.Sprintf(`{"resourceType":"ValueSet","status":"draft","url":%q}`, canonical)), http.StatusCreated)
	s.expect(s.do("POST", "/Observation", fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"text":"x"},
		"subject":{"reference":%q}}`, absolute)), http.StatusCreated)

	// The same in a transaction, with a second patient of long values.
	family2, value2 := "Q"+longText(10_000, 5), longText(10_000, 6)
	bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":%s,"request":{"method":"POST","url":"Patient"}}]}`,
		patient(family2, value2))
	s.expect(s.do("POST", "", bundle), http.StatusOK)

	// Just past the limit, by a system long enough that a short code is oversized: a search
	// must not take the code's length for the row's (see fitsOnly).
	edgeSystem := "urn:x:" + longText(fhir.MaxIndexedBytes-len("urn:x:")-len("edge-code")+1, 7)
	s.expect(s.do("POST", "/Patient", fmt.Sprintf(`{"resourceType":"Patient","identifier":[{"system":%q,"value":"edge-code"}]}`, edgeSystem)), http.StatusCreated)
	edgeURL := "http://example.org/ValueSet/" + longText(fhir.MaxIndexedBytes-len("http://example.org/ValueSet/")+1, 8)
	s.expect(s.do("POST", "/ValueSet", fmt.Sprintf(`{"resourceType":"ValueSet","status":"draft","url":%q}`, edgeURL)), http.StatusCreated)

	found := func(t *testing.T, query string, want int) {
		t.Helper()
		r := s.with(t).expect(s.do("GET", "/"+query+"&_summary=count", ""), http.StatusOK)
		if n := r.json(t)["total"]; fmt.Sprint(n) != fmt.Sprint(want) {
			t.Errorf("%.80s...: total %v, want %d", query, n, want)
		}
	}
	q := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "%7C"), ":", "%3A") }
	for name, c := range map[string]struct {
		query string
		want  int
	}{
		"family prefix":     {"Patient?family=" + family[:30], 1},
		"family whole":      {"Patient?family=" + family, 1},
		"family exact":      {"Patient?family:exact=" + family, 1},
		"family contains":   {"Patient?family:contains=" + family[9000:9040], 1},
		"address prefix":    {"Patient?address=" + family[:3000], 1},
		"bundle family":     {"Patient?family:exact=" + family2, 1},
		"identifier":        {"Patient?identifier=" + q("urn:oid:1.2.3|"+value), 1},
		"identifier bare":   {"Patient?identifier=" + value2, 1},
		"identifier other":  {"Patient?identifier=" + value[:9999], 0},
		"canonical":         {"ValueSet?url=" + q(canonical), 1},
		"canonical below":   {"ValueSet?url:below=" + q(canonical[:100]), 1},
		"absolute ref":      {"Observation?subject=" + q(absolute), 1},
		"both long and not": {"Patient?family=" + family[:5] + "," + "nobody", 1},
		"edge system|code":  {"Patient?identifier=" + q(edgeSystem+"|edge-code"), 1},
		"edge code alone":   {"Patient?identifier=edge-code", 1},
		"edge canonical":    {"ValueSet?url=" + q(edgeURL), 1},
		"edge url above":    {"ValueSet?url:above=" + q(edgeURL+"/more"), 1},
	} {
		t.Run(name, func(t *testing.T) { found(t, c.query, c.want) })
	}
	// An update replaces long values as it does short ones.
	s.expect(s.do("PUT", "/Patient/"+id, `{"resourceType":"Patient","id":"`+id+`","name":[{"family":"Short"}]}`), http.StatusOK)
	found(t, "Patient?family:exact="+family, 0)
	found(t, "Patient?family=Short", 1)
}

// TestLargeResourceMemory reports what a 10 MB Patient costs the server to create: bytes
// allocated and the peak of live heap, sampled while the request runs. It logs figures for
// the README rather than asserting them, which would depend on the machine; the 201 is the
// assertion.
func TestLargeResourceMemory(t *testing.T) {
	s := newTestServer(t)
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = fmt.Sprintf(`{"system":"urn:oid:1.2.3","value":%q}`, longText(1000, uint64(i)))
	}
	body := `{"resourceType":"Patient","identifier":[` + strings.Join(ids, ",") + `]}`
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	done, peak := make(chan struct{}), make(chan uint64)
	go func() {
		var top uint64
		var m runtime.MemStats
		for {
			select {
			case <-done:
				peak <- top
				return
			case <-time.After(2 * time.Millisecond):
				runtime.ReadMemStats(&m)
				top = max(top, m.HeapAlloc)
			}
		}
	}()
	start := time.Now()
	s.expect(s.do("POST", "/Patient", body), http.StatusCreated)
	elapsed := time.Since(start)
	close(done)
	top := <-peak
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("%.1f MB Patient: created in %v, %d MB allocated, live heap peaked %d MB above the start (%.0fx the body)",
		float64(len(body))/(1<<20), elapsed.Round(time.Millisecond), (after.TotalAlloc-before.TotalAlloc)>>20,
		(top-before.HeapAlloc)>>20, float64(top-before.HeapAlloc)/float64(len(body)))
}
