// Package access decides who may use which route. Every route of the server has a rule here,
// keyed by its method and path template; a route without one is refused to everybody, so a
// route added without thought about who may use it is closed, not open.
//
// The rules read the request's Principal (package auth), which the authentication middleware
// put there, and its role:
//
//   - ehr: the FHIR API as its SMART scopes allow, per resource type and kind of access.
//   - coordinator: their sites' patients' resources and follow-up Tasks, by id (read, and
//     update of Tasks), each patient's follow-up, and the work list limited to their sites.
//     Anything of another site answers 404, as if it did not exist.
//   - researcher: the registry's aggregate outcomes and the published definitions; never a
//     patient's data.
//   - admin: everything.
//
// Definitions (StructureDefinition, CodeSystem, …) hold no patient data: every signed-in
// principal may read them.
package access

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

// SiteChecker says whether a stored resource concerns a patient of one of sites (for a
// Patient: the patient; for a Task: its patient; otherwise the patient it refers to as
// subject or patient). A resource of no patient concerns no site.
type SiteChecker func(ctx context.Context, resourceType, id string, sites []string) (bool, error)

// Policy holds a rule for every route.
type Policy struct {
	inSites SiteChecker
	rules   map[string]rule
	public  map[string]bool
}

// rule decides one route: nil lets the request through.
type rule func(c echo.Context, p *auth.Principal) error

// New returns the policy of cartreg's routes.
func New(inSites SiteChecker) *Policy {
	pol := &Policy{inSites: inSites, public: map[string]bool{}}
	pol.rules = pol.routes()
	return pol
}

// Public are the routes anyone may use without a token: probes, the server's capability
// statement and SMART configuration, the token endpoint itself, and the pages' sign-in.
var Public = []string{
	"GET /healthz", "GET /readyz", "HEAD /healthz", "HEAD /readyz",
	"GET /fhir/metadata",
	"GET /.well-known/smart-configuration", "GET /fhir/.well-known/smart-configuration",
	"POST /auth/token", "GET /auth/jwks.json",
	// The web pages' sign-in form and their styles and script (package web).
	"GET /signin", "POST /signin", "GET /static/*",
	// Signing in with the hospital's OpenID Connect provider: off to it, and back.
	"GET /signin/oidc", "GET /signin/oidc/callback",
}

// IsPublic says whether c's route needs no token.
func IsPublic(c echo.Context) bool {
	return slices.Contains(Public, c.Request().Method+" "+c.Path())
}

// WithSites sets the site checker of coordinators' rules and returns the policy.
func (pol *Policy) WithSites(inSites SiteChecker) *Policy {
	pol.inSites = inSites
	return pol
}

// Middleware refuses every request whose route's rule does not let its principal through.
// It runs after authentication, on routed requests.
func (pol *Policy) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			key := c.Request().Method + " " + c.Path()
			if IsPublic(c) {
				return next(c)
			}
			p, ok := auth.FromContext(c.Request().Context())
			if !ok {
				return fhir.NewOutcome(http.StatusUnauthorized, fhir.IssueType("login"), "this needs a bearer token")
			}
			r, ok := pol.rules[key]
			if !ok {
				if c.Path() == "" || c.Path() == "/*" {
					return next(c) // no route: the router's own 404 or 405
				}
				return forbidden("%s %s is open to nobody", c.Request().Method, c.Path())
			}
			if err := r(c, p); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// Unruled lists the routes of e that have no rule: a test keeps it empty.
func (pol *Policy) Unruled(e *echo.Echo) []string {
	var out []string
	for _, r := range e.Routes() {
		key := r.Method + " " + r.Path
		if _, ok := pol.rules[key]; !ok && !slices.Contains(Public, key) {
			if r.Path == "" || r.Path == "/*" || r.Method == echo.RouteNotFound {
				continue
			}
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

func forbidden(format string, args ...any) error {
	return fhir.NewOutcome(http.StatusForbidden, fhir.IssueType("forbidden"), fmt.Sprintf(format, args...))
}

// notFound is what a coordinator hears of another site's resource: the same as for one that
// does not exist, so its existence is not revealed.
func notFound(resourceType, id string) error {
	return fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("%s/%s is not known", resourceType, id))
}

// Guard checks each entry of a transaction or batch against the principal's scopes, as the
// route rules check a single request; a transaction with one refused entry writes nothing.
// Callers in the process without a principal (the importer's tests, the registry's own
// publishing) are code of the server, not clients, and pass.
func (pol *Policy) Guard() fhir.Guard {
	return func(ctx context.Context, a fhir.Access) error {
		p, ok := auth.FromContext(ctx)
		if !ok {
			return nil
		}
		if a.Type == "AuditEvent" && a.Interaction != "read" && a.Interaction != "search" {
			return forbidden("AuditEvents are written by the server alone")
		}
		access := entryAccess[a.Interaction]
		if access == 0 {
			return forbidden("%s of %s is not allowed in a Bundle", a.Interaction, a.Type)
		}
		if (p.Role == auth.RoleEHR || p.Role == auth.RoleAdmin) && p.Scopes.Allows(a.Type, access) {
			return nil
		}
		return forbidden("the token's scopes do not allow %s on %s (system/%s.%s)", a.Interaction, a.Type, a.Type, access)
	}
}

var entryAccess = map[string]auth.Access{
	"read": auth.Read, "vread": auth.Read, "history": auth.Read, "search": auth.Search,
	"create": auth.Create, "update": auth.Update, "patch": auth.Update, "delete": auth.Delete,
}
