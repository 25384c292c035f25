package fhir_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
)

// loadOrganizationCycle writes n Organizations org0…org(n-1), each partOf the next and the
// last partOf the first: a chain over them never runs out of links.
func loadOrganizationCycle(t *testing.T, s *testServer, n int) {
	t.Helper()
	var entries []string
	for i := 0; i < n; i++ {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Organization","id":"org%d","name":"org%d",
			"partOf":{"reference":"Organization/org%d"}},"request":{"method":"PUT","url":"Organization/org%d"}}`, i, i, (i+1)%n, i))
	}
	s.expect(s.do("POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`), http.StatusOK)
}

// expectTooCostly checks a refusal: the status, the too-costly code, and diagnostics that
// name the limit's setting and value.
func expectTooCostly(t *testing.T, r *response, status int, setting string, value int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	code, diagnostics, _ := outcomeIssue(t, r)
	if code != "too-costly" || !strings.Contains(diagnostics, setting) || !strings.Contains(diagnostics, fmt.Sprint(value)) {
		t.Fatalf("issue %s %q, want too-costly naming %s and %d", code, diagnostics, setting, value)
	}
}

func TestSearchLimitsRefuseCostlyQueries(t *testing.T) {
	s := newTestServer(t)
	loadOrganizationCycle(t, s, 50)

	t.Run("chain of depth 10 over a cycle", func(t *testing.T) {
		s := s.with(t)
		key := strings.Repeat("partof.", 10) + "name"
		r := s.do("GET", "/Organization?"+key+"=x", "")
		expectTooCostly(t, r, http.StatusBadRequest, "CARTREG_SEARCH_MAX_CHAIN_DEPTH", 3)
		if _, _, expr := outcomeIssue(t, r); len(expr) != 1 || expr[0] != key {
			t.Errorf("located at %v, want %s", expr, key)
		}
		// Within the limit the chain still works: org0's parent's parent's parent is org3.
		r = s.expect(s.do("GET", "/Organization?partof.partof.partof.name:exact=org3", ""), http.StatusOK)
		if got := found(t, r, "match"); len(got) != 1 || got[0] != "org0" {
			t.Errorf("partof.partof.partof.name=org3 found %v, want [org0]", got)
		}
	})
	t.Run("_has nested 3 deep", func(t *testing.T) {
		s := s.with(t)
		key := strings.Repeat("_has:Organization:partof:", 3) + "name"
		expectTooCostly(t, s.do("GET", "/Organization?"+url.QueryEscape(key)+"=x", ""), http.StatusBadRequest, "CARTREG_SEARCH_MAX_HAS_DEPTH", 2)
		// Two levels still answer: org2 is the parent of the parent of org0.
		r := s.expect(s.do("GET", "/Organization?"+url.QueryEscape(strings.Repeat("_has:Organization:partof:", 2)+"name:exact")+"=org0", ""), http.StatusOK)
		if got := found(t, r, "match"); len(got) != 1 || got[0] != "org2" {
			t.Errorf("two _has found %v, want [org2]", got)
		}
	})
	t.Run("200 repeated name parameters", func(t *testing.T) {
		s := s.with(t)
		q := strings.TrimSuffix(strings.Repeat("name=org&", 200), "&")
		expectTooCostly(t, s.do("GET", "/Organization?"+q, ""), http.StatusBadRequest, "CARTREG_SEARCH_MAX_PARAMETERS", 50)
		// And the same through POST _search, and as a Bundle's GET entry.
		expectTooCostly(t, s.do("POST", "/Organization/_search", q, "Content-Type", "application/x-www-form-urlencoded"),
			http.StatusBadRequest, "CARTREG_SEARCH_MAX_PARAMETERS", 50)
		r := s.expect(s.do("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Organization?`+q+`"}}]}`), http.StatusOK)
		entry := asSlice(r.json(t)["entry"])[0].(map[string]any)
		if status := entry["response"].(map[string]any)["status"].(string); !strings.HasPrefix(status, "400") {
			t.Errorf("the batch's GET entry answered %s, want 400", status)
		}
	})
	t.Run("70,000 alternatives in one parameter", func(t *testing.T) {
		s := s.with(t)
		// Each alternative was a statement argument: past PostgreSQL's 65,535 the search
		// failed with a 500.
		q := "name=" + strings.TrimSuffix(strings.Repeat("a,", 70000), ",")
		expectTooCostly(t, s.do("POST", "/Organization/_search", q, "Content-Type", "application/x-www-form-urlencoded"),
			http.StatusBadRequest, "CARTREG_SEARCH_MAX_VALUES", 1000)
	})
	t.Run("_sort with 200 keys", func(t *testing.T) {
		s := s.with(t)
		keys := strings.TrimSuffix(strings.Repeat("name,-_lastUpdated,", 100), ",")
		expectTooCostly(t, s.do("GET", "/Organization?_sort="+keys, ""), http.StatusBadRequest, "CARTREG_SEARCH_MAX_SORT_KEYS", 5)
	})
	t.Run("11 _include values", func(t *testing.T) {
		s := s.with(t)
		q := strings.TrimSuffix(strings.Repeat("_include=Organization:partof&", 6)+strings.Repeat("_revinclude=Organization:partof&", 5), "&")
		expectTooCostly(t, s.do("GET", "/Organization?"+q, ""), http.StatusBadRequest, "CARTREG_SEARCH_MAX_INCLUDES", 10)
	})
}

func TestIncludeFanOutIsCapped(t *testing.T) {
	s := newTestServer(t, func(c *fhir.APIConfig) { c.Search.MaxIncluded = 5 })
	s.expect(s.do("PUT", "/Organization/hub", `{"resourceType":"Organization","id":"hub","name":"hub"}`), http.StatusCreated)
	for i := 0; i < 8; i++ {
		s.expect(s.do("PUT", fmt.Sprintf("/Patient/p%d", i), fmt.Sprintf(`{"resourceType":"Patient","id":"p%d","managingOrganization":{"reference":"Organization/hub"}}`, i)), http.StatusCreated)
	}
	expectTooCostly(t, s.do("GET", "/Organization?_id=hub&_revinclude=Patient:organization", ""), http.StatusUnprocessableEntity, "CARTREG_SEARCH_MAX_INCLUDED", 5)
	// Under the cap nothing changes: five patients include their one organization.
	r := s.expect(s.do("GET", "/Patient?_count=5&_include=Patient:organization", ""), http.StatusOK)
	if got := found(t, r, "include"); len(got) != 1 || got[0] != "hub" {
		t.Errorf("included %v, want [hub]", got)
	}
}

// holdLock takes lock in a transaction of the test's own and releases it after d, or when
// the test ends.
func holdLock(t *testing.T, s *testServer, lock string, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, lock); err != nil {
		t.Fatal(err)
	}
	release := time.AfterFunc(d, func() { _ = tx.Rollback(ctx) })
	t.Cleanup(func() { release.Stop(); _ = tx.Rollback(ctx) })
}

func TestStatementsRunPastTheirTimeLimitAreCancelled(t *testing.T) {
	s := newTestServer(t, func(c *fhir.APIConfig) {
		c.Search.Timeout = 300 * time.Millisecond
		c.BundleTimeout = 300 * time.Millisecond
	})
	loadOrganizationCycle(t, s, 3)

	t.Run("search", func(t *testing.T) {
		s := s.with(t)
		// A statement that cannot finish: the string index is locked. Without a time limit
		// the search would wait for the lock (here 20 s; a costly plan, for ever).
		holdLock(t, s, "LOCK TABLE search_string IN ACCESS EXCLUSIVE MODE", 20*time.Second)
		r := s.do("GET", "/Organization?name=org", "")
		expectTooCostly(t, r, http.StatusUnprocessableEntity, "CARTREG_SEARCH_TIMEOUT", 300)
	})
	t.Run("history and $everything", func(t *testing.T) {
		s := s.with(t)
		holdLock(t, s, "LOCK TABLE resource_version IN ACCESS EXCLUSIVE MODE", 20*time.Second)
		expectTooCostly(t, s.do("GET", "/Organization/_history", ""), http.StatusUnprocessableEntity, "CARTREG_SEARCH_TIMEOUT", 300)
		expectTooCostly(t, s.do("GET", "/Patient/$everything", ""), http.StatusUnprocessableEntity, "CARTREG_SEARCH_TIMEOUT", 300)
	})
	t.Run("transaction", func(t *testing.T) {
		s := s.with(t)
		holdLock(t, s, "SELECT 1 FROM resource WHERE resource_type = 'Organization' AND resource_id = 'org1' FOR UPDATE", 20*time.Second)
		r := s.do("POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Organization","id":"org1","name":"renamed"},
			"request":{"method":"PUT","url":"Organization/org1"}}]}`)
		expectTooCostly(t, r, http.StatusUnprocessableEntity, "CARTREG_BUNDLE_TIMEOUT", 300)
		r = s.do("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Organization","id":"org1","name":"renamed"},
			"request":{"method":"PUT","url":"Organization/org1"}}]}`)
		s.expect(r, http.StatusOK)
		entry := asSlice(r.json(t)["entry"])[0].(map[string]any)
		if status := entry["response"].(map[string]any)["status"].(string); !strings.HasPrefix(status, "422") {
			t.Errorf("the batch entry answered %s, want 422", status)
		}
	})
	// The limits are the transactions' own: the pooled connections they ran on keep none.
	var setting string
	if err := s.db.QueryRow(context.Background(), "SHOW statement_timeout").Scan(&setting); err != nil || setting != "0" {
		t.Errorf("statement_timeout outside the searches is %q (%v), want 0", setting, err)
	}
}

func TestGarbageCursorsAreRefused(t *testing.T) {
	s := newTestServer(t)
	loadOrganizationCycle(t, s, 3)
	s.expect(s.do("PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`), http.StatusCreated)
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	garbage := []string{
		"garbage", "!!!", enc("null"), enc("{}"), enc(`[]`), enc(`{"t":"Organization","i":"../x"}`),
		enc(`{"k":[1],"t":"Organization","i":"org1"}`), // a sort value that is not text
		enc(`{"k":["not a time"],"t":"Organization","i":"org1"}`),
	}
	for _, g := range garbage {
		path := "/Organization?_cursor=" + url.QueryEscape(g)
		if strings.Contains(g, "k") || g == enc(`{"k":[1],"t":"Organization","i":"org1"}`) {
			path += "&_sort=-_lastUpdated"
		}
		r := s.do("GET", path, "")
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", path, r.status, r.body)
		}
		if r := s.do("GET", "/Patient/p1/$everything?_cursor="+url.QueryEscape(g), ""); r.status != http.StatusBadRequest {
			t.Errorf("$everything _cursor=%s: status %d, want 400: %s", g, r.status, r.body)
		}
	}
	s.expect(s.do("GET", "/Organization?_cursor=", ""), http.StatusBadRequest)
	// A cursor the server made still pages.
	r := s.expect(s.do("GET", "/Organization?_count=2&_sort=-_lastUpdated", ""), http.StatusOK)
	next := link(r.json(t), "next", s.base)
	if next == "" {
		t.Fatal("no next link")
	}
	s.expect(s.do("GET", next, ""), http.StatusOK)
}
