package fhir_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The benchmarks go through the whole stack: HTTP, google/fhir parsing and validation,
// indexing and PostgreSQL (the test cluster, whose fsync is off: durable figures are lower).

func BenchmarkCreatePatient(b *testing.B) {
	s := newTestServer(b)
	b.ResetTimer()
	for b.Loop() {
		if r := s.do("POST", "/Patient", patientJSON); r.status != http.StatusCreated {
			b.Fatalf("status %d", r.status)
		}
	}
}

func BenchmarkReadPatient(b *testing.B) {
	s := newTestServer(b)
	id := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated).json(b)["id"].(string)
	b.ResetTimer()
	for b.Loop() {
		if r := s.do("GET", "/Patient/"+id, ""); r.status != http.StatusOK {
			b.Fatalf("status %d", r.status)
		}
	}
}

// BenchmarkSearchObservations runs the registry's typical query, a patient's observations of
// one code since a date, over 200 patients with 10 observations each.
func BenchmarkSearchObservations(b *testing.B) {
	s := newTestServer(b)
	for p := 0; p < 200; p++ {
		s.expect(s.do("PUT", fmt.Sprintf("/Patient/b%d", p), fmt.Sprintf(`{"resourceType":"Patient","id":"b%d","gender":"female"}`, p)), http.StatusCreated)
		for o := 0; o < 10; o++ {
			obs := fmt.Sprintf(`{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/b%d"},
				"code":{"coding":[{"system":"http://loinc.org","code":"%s"}]},"effectiveDateTime":"202%d-0%d-01"}`,
				p, []string{"29463-7", "8302-2"}[o%2], o%5, 1+o%9)
			s.expect(s.do("POST", "/Observation", obs), http.StatusCreated)
		}
	}
	// A deployment's autovacuum keeps statistics; right after a load they must be made.
	if _, err := s.db.Exec(context.Background(), "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := fmt.Sprintf("/Observation?patient=Patient/b%d&code=http://loinc.org|29463-7&date=ge2021-01-01", i%200)
		r := s.do("GET", q, "")
		if r.status != http.StatusOK {
			b.Fatalf("status %d: %s", r.status, r.body)
		}
	}
}

// BenchmarkSmallTransactions posts Bundles of one Patient and one Observation referring to
// it, from 32 concurrent clients; it reports transactions per second.
func BenchmarkSmallTransactions(b *testing.B) {
	s := newTestServer(b)
	const bundle = `{"resourceType":"Bundle","type":"transaction","entry":[
	  {"fullUrl":"urn:uuid:6f1c3d2a-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","name":[{"family":"Bench"}],"birthDate":"1980-01-01"},"request":{"method":"POST","url":"Patient"}},
	  {"resource":{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
	    "subject":{"reference":"urn:uuid:6f1c3d2a-0000-4000-8000-000000000001"},"valueQuantity":{"value":70,"unit":"kg"}},"request":{"method":"POST","url":"Observation"}}]}`
	b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := s.do("POST", "", bundle); r.status != http.StatusOK {
				b.Errorf("status %d: %s", r.status, r.body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
}

// largeTransaction is one Patient and observations Observations about them, all creates: a
// site's import, sent by one client.
func largeTransaction(observations int) string {
	var sb strings.Builder
	sb.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[
	  {"fullUrl":"urn:uuid:6f1c3d2a-0000-4000-8000-0000000000aa","resource":{"resourceType":"Patient","name":[{"family":"Large"}],"birthDate":"1980-01-01"},"request":{"method":"POST","url":"Patient"}}`)
	for i := 0; i < observations; i++ {
		fmt.Fprintf(&sb, `,
	  {"resource":{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
	    "code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body weight"}]},"effectiveDateTime":"2026-%02d-%02dT09:00:00Z",
	    "subject":{"reference":"urn:uuid:6f1c3d2a-0000-4000-8000-0000000000aa"},"valueQuantity":{"value":%d.5,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}},
	   "request":{"method":"POST","url":"Observation"}}`, 1+i%12, 1+i%28, 50+i%40)
	}
	sb.WriteString(`]}`)
	return sb.String()
}

// One client's large transaction: its latency is what an importing site waits for, and
// nothing else competes for the cores.
func BenchmarkLargeTransaction(b *testing.B) {
	s := newTestServer(b)
	bundle := largeTransaction(499)
	b.ResetTimer()
	for b.Loop() {
		if r := s.do("POST", "", bundle); r.status != http.StatusOK {
			b.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	b.ReportMetric(500*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
}
