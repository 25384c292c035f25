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
