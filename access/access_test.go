package access

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

func principal(role auth.Role, scopes string) context.Context {
	return auth.WithPrincipal(context.Background(), &auth.Principal{Kind: auth.KindClient, Role: role, Scopes: auth.MustParseScopes(scopes)})
}

func TestGuardChecksEachEntryAgainstTheScopes(t *testing.T) {
	guard := New(nil).Guard()
	for _, c := range []struct {
		ctx    context.Context
		access fhir.Access
		want   int // 0: allowed
	}{
		{principal(auth.RoleEHR, "system/Observation.write"), fhir.Access{Interaction: "create", Type: "Observation"}, 0},
		{principal(auth.RoleEHR, "system/Observation.write"), fhir.Access{Interaction: "read", Type: "Observation"}, 403},
		{principal(auth.RoleEHR, "system/Observation.write"), fhir.Access{Interaction: "create", Type: "Patient"}, 403},
		{principal(auth.RoleEHR, "system/Patient.rs"), fhir.Access{Interaction: "search", Type: "Patient"}, 0},
		{principal(auth.RoleEHR, "system/Patient.rs"), fhir.Access{Interaction: "patch", Type: "Patient"}, 403},
		{principal(auth.RoleEHR, "system/*.cruds"), fhir.Access{Interaction: "delete", Type: "Condition"}, 0},
		{principal(auth.RoleEHR, "system/*.*"), fhir.Access{Interaction: "create", Type: "AuditEvent"}, 403},
		{principal(auth.RoleCoordinator, "system/Task.rus"), fhir.Access{Interaction: "update", Type: "Task"}, 403},
		{principal(auth.RoleResearcher, "cartreg/outcomes.read"), fhir.Access{Interaction: "read", Type: "Patient"}, 403},
		{principal(auth.RoleAdmin, "system/*.*"), fhir.Access{Interaction: "update", Type: "Patient"}, 0},
		{context.Background(), fhir.Access{Interaction: "create", Type: "Patient"}, 0}, // the server's own code
	} {
		err := guard(c.ctx, c.access)
		var o *fhir.Outcome
		switch {
		case c.want == 0 && err != nil:
			t.Errorf("%+v: refused: %v", c.access, err)
		case c.want != 0 && (!errors.As(err, &o) || o.Status != c.want):
			t.Errorf("%+v: %v, want %d", c.access, err, c.want)
		}
	}
}

// A route nobody wrote a rule for is closed to everybody, administrators included.
func TestARouteWithoutARuleIsClosed(t *testing.T) {
	pol := New(nil)
	e := echo.New()
	e.GET("/new/feature", func(c echo.Context) error { return c.String(http.StatusOK, "patient data") })
	if got := pol.Unruled(e); len(got) != 1 || got[0] != "GET /new/feature" {
		t.Fatalf("Unruled = %v", got)
	}
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.SetRequest(c.Request().WithContext(principal(auth.RoleAdmin, "system/*.* cartreg/admin")))
			return next(c)
		}
	}, pol.Middleware())
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var o *fhir.Outcome
		if errors.As(err, &o) {
			_ = c.NoContent(o.Status)
		}
	}
	rec := newRecorder()
	e.ServeHTTP(rec, mustRequest(http.MethodGet, "/new/feature"))
	if rec.Code != http.StatusForbidden {
		t.Errorf("an administrator at a route without a rule: %d, want 403", rec.Code)
	}
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func mustRequest(method, target string) *http.Request {
	return httptest.NewRequest(method, target, nil)
}
