package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry"
)

// dashboardFor asks reg for the dashboard's two reports with the query string query.
func dashboardFor(t *testing.T, reg *registry.Registry, query string) (*registry.ResponseReport, *registry.SurvivalReport) {
	t.Helper()
	response, survival, err := dashboardAs(reg, nil, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return response, survival
}

// dashboardAs is dashboardFor as the principal p (nil: none), with the error.
func dashboardAs(reg *registry.Registry, p *auth.Principal, query string) (*registry.ResponseReport, *registry.SurvivalReport, error) {
	req := httptest.NewRequest(http.MethodGet, "/registry/outcomes/survival?"+query, nil)
	if p != nil {
		req = req.WithContext(auth.WithPrincipal(req.Context(), p))
	}
	return reg.DashboardFor(echo.New().NewContext(req, httptest.NewRecorder()))
}

// The dashboard's cohorts go through the overlap control as the endpoints' do: a dashboard
// one patient away from one the same person saw is refused, and leaves nothing recorded.
func TestTheDashboardIsUnderTheOverlapControl(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, served)
	for i := 0; i < 10; i++ {
		enrol(t, tr, "Riverside", fmt.Sprintf("2024-01-%02d", 2+i), []int{0, 300, 0, 0, 500, 0, 0, 0, 900, 0}[i])
	}
	enrol(t, tr, "Riverside", "2024-02-10", 637)
	who := auth.Operator("dashboard")
	if _, _, err := dashboardAs(tr.reg, who, "infused_to=2024-01"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"infused_to=2024-02", "infused_to=2024-02&endpoint=pfs&group_by=site"} {
		_, _, err := dashboardAs(tr.reg, who, q)
		var o *fhir.Outcome
		if !errors.As(err, &o) || o.Status != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "CARTREG_OUTCOMES_OVERLAP_WINDOW") {
			t.Errorf("%s, one patient more than a dashboard seen: %v", q, err)
		}
	}
	if _, _, err := dashboardAs(tr.reg, who, "infused_to=2024-01&group_by=disease"); err != nil {
		t.Errorf("the same patients again: %v", err)
	}
}

// The dashboard's two reports, read in one pass over the courses, are the response and
// survival reports each endpoint computes on its own, for every grouping, endpoint and
// filter, ends of follow-up included; and once the dashboard has computed them, the
// endpoints serve them from the report cache.
func TestTheDashboardIsTheTwoReportsFromOnePass(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, exact)
	tr.now = cohortAsOf
	loadCohortDirect(t, tr, generate(t, 600, 11))
	// Some patients' follow-up ended (lost or withdrawn, in turn: a random choice left some
	// runs with one reason only among the patients a timepoint counts), behind the
	// projection's back: the response report counts them apart from missed visits.
	ctx := context.Background()
	if _, err := tr.db.Exec(ctx, `INSERT INTO registry_follow_up_end (episode_id, patient_id, ended_on, reason)
		SELECT 'e' || patient_id, patient_id, infused_on + 200,
			CASE WHEN row_number() OVER (ORDER BY patient_id) % 2 = 0 THEN 'lost' ELSE 'withdrawn' END
		FROM registry_infusion WHERE sequence = 1 AND death_on IS NULL ORDER BY patient_id LIMIT 60`); err != nil {
		t.Fatal(err)
	}
	uncachedRegistry, err := registry.New(exact, tr.db, tr.h.App.Store, func() time.Time { return tr.now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	queries := []struct{ dashboard, response, survival string }{
		{"", "response", "survival"},
		{"group_by=product", "response?group_by=product", "survival?group_by=product"},
		{"group_by=disease&endpoint=pfs", "response?group_by=disease", "survival?group_by=disease&endpoint=pfs"},
		{"group_by=site&endpoint=dor", "response?group_by=site", "survival?group_by=site&endpoint=dor"},
		{"disease=lbcl&infused_from=2021-01&endpoint=os", "response?disease=lbcl&infused_from=2021-01", "survival?disease=lbcl&infused_from=2021-01"},
	}
	lost := false
	for _, q := range queries {
		response, survival := dashboardFor(t, uncachedRegistry, q.dashboard)
		if got, want := canonicalJSON(t, response), uncached(t, tr, q.response); got != want {
			t.Errorf("%s: the dashboard's response report\n%s\nthe endpoint's\n%s", q.dashboard, got, want)
		}
		if got, want := canonicalJSON(t, survival), uncached(t, tr, q.survival); got != want {
			t.Errorf("%s: the dashboard's survival report\n%s\nthe endpoint's\n%s", q.dashboard, got, want)
		}
		for _, g := range response.Groups {
			for _, tp := range g.Timepoints {
				if tp.LostToFollowUp != nil && *tp.LostToFollowUp > 0 && tp.Withdrawn != nil && *tp.Withdrawn > 0 {
					lost = true
				}
			}
		}
	}
	if !lost {
		t.Error("no report counted a patient lost and one withdrawn: the ends of follow-up were not read")
	}

	// The served registry keeps what its dashboard computed: a change behind the cache's back
	// (every alive patient dies on day 100) shows in neither endpoint until the version moves.
	for _, q := range queries[:2] {
		dashboardFor(t, tr.reg, q.dashboard)
	}
	before := map[string]string{}
	for _, q := range queries[:2] {
		before[q.response], before[q.survival] = uncached(t, tr, q.response), uncached(t, tr, q.survival)
	}
	if _, err := tr.db.Exec(ctx, `UPDATE registry_infusion SET death_on = infused_on + 100 WHERE death_on IS NULL`); err != nil {
		t.Fatal(err)
	}
	for query, want := range before {
		if got := tr.served(t, query); got != want {
			t.Errorf("%s was computed again, not served as the dashboard kept it:\n%s\nwant\n%s", query, got, want)
		}
		if uncached(t, tr, query) == want {
			t.Errorf("%s: the change behind the cache's back changes nothing, so the test shows nothing", query)
		}
	}
}
