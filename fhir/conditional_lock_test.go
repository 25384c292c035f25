package fhir_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// The reproduction: conditional creates whose criteria are written differently but select
// the same Patient ("s|X", "X", with result parameters or in another order) made two
// Patients in most concurrent rounds, as the lock was on the query's text. Each round now
// makes exactly one.
func TestEquivalentConditionalCreatesAtOnceMakeOneResource(t *testing.T) {
	s := newTestServer(t)
	const system = "urn:oid:1.2.36.146.595.217.0.1"
	variants := []string{
		"identifier=" + system + "|%s",
		"identifier=" + system + "|%s&_count=1",
		"identifier=%s",
		"_sort=family&_summary=true&identifier=" + url.QueryEscape(system+"|") + "%s",
		"identifier=" + system + "|%s&gender=male",
		"identifier=" + system + "|other-%s," + system + "|%s",
	}
	for round := range 10 {
		value := fmt.Sprintf("round-%d", round)
		body := strings.Replace(patientJSON, "12345", value, 1)
		n := 2 + round%3 // 2 to 4 writers
		start := make(chan struct{})
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := range n {
			variant := variants[(round+i)%len(variants)]
			criteria := strings.ReplaceAll(variant, "%s", value)
			if strings.Count(variant, "%s") == 2 {
				criteria = fmt.Sprintf(variant, value, value)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				statuses[i] = s.do("POST", "/Patient", body, "If-None-Exist", criteria).status
			}()
		}
		close(start)
		wg.Wait()
		created := 0
		for _, st := range statuses {
			switch st {
			case http.StatusCreated:
				created++
			case http.StatusOK:
			default:
				t.Fatalf("round %d: statuses %v", round, statuses)
			}
		}
		found := s.expect(s.do("GET", "/Patient?identifier="+url.QueryEscape(system+"|"+value), ""), http.StatusOK).json(t)
		if entries, _ := found["entry"].([]any); created != 1 || len(entries) != 1 {
			t.Errorf("round %d (%d writers): %d creates reported, %d Patients stored; want 1 and 1", round, n, created, len(entries))
		}
	}
}

// The same through transaction Bundles, whose ifNoneExist entries are matched together.
func TestEquivalentIfNoneExistInConcurrentBundlesMakeOneResource(t *testing.T) {
	s := newTestServer(t)
	const system = "urn:oid:1.2.36.146.595.217.0.1"
	for round := range 5 {
		value := fmt.Sprintf("bundle-%d", round)
		patient := strings.Replace(patientJSON, "12345", value, 1)
		criteria := []string{"identifier=" + system + "|" + value, "identifier=" + value + "&_count=1", "_sort=family&identifier=" + system + "|" + value}
		start := make(chan struct{})
		var wg sync.WaitGroup
		statuses := make([]int, len(criteria))
		for i, c := range criteria {
			bundle := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + patient +
				`,"request":{"method":"POST","url":"Patient","ifNoneExist":"` + c + `"}}]}`
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				statuses[i] = s.do("POST", "", bundle).status
			}()
		}
		close(start)
		wg.Wait()
		found := s.expect(s.do("GET", "/Patient?identifier="+url.QueryEscape(system+"|"+value), ""), http.StatusOK).json(t)
		if entries, _ := found["entry"].([]any); len(entries) != 1 {
			t.Errorf("round %d: statuses %v, %d Patients stored; want 1", round, statuses, len(entries))
		}
	}
}
