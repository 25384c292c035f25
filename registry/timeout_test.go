package registry_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/auth"
)

// An outcome query that runs past CARTREG_OUTCOMES_TIMEOUT is cancelled by PostgreSQL and
// answered with a 422 naming the setting, not left to hold a connection. The query is made
// to wait on a lock, which statement_timeout counts, so the test does not depend on how fast
// the machine is.
func TestAnOutcomeQueryPastItsTimeLimitIsRefused(t *testing.T) {
	tr := newTestRegistryWith(t, func(c *app.Config) {
		c.Registry.MinCell, c.Registry.QueryTimeout = 1, 300*time.Millisecond
	})
	researcher := tr.h.Token(auth.RoleResearcher)
	ctx := context.Background()

	blocker, err := tr.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, `LOCK TABLE registry_infusion IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	r := tr.h.As(researcher, "GET", "/registry/outcomes/survival", nil)
	if r.Status != http.StatusUnprocessableEntity || !strings.Contains(string(r.Body), "CARTREG_OUTCOMES_TIMEOUT") {
		t.Fatalf("a query held past its limit: status %d, want 422 naming CARTREG_OUTCOMES_TIMEOUT\n%s", r.Status, r.Body)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := tr.h.As(researcher, "GET", "/registry/outcomes/survival", nil); r.Status != http.StatusOK {
		t.Fatalf("the same query with nothing in its way: status %d\n%s", r.Status, r.Body)
	}
}
