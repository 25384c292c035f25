package auth

import (
	"context"
	"fmt"
)

// Role is what a principal is for; it decides the default scopes and what the routes let it do.
type Role string

// The roles.
const (
	RoleEHR         Role = "ehr"         // a hospital system that sends its patients' data
	RoleCoordinator Role = "coordinator" // follows up one or more sites' patients
	RoleResearcher  Role = "researcher"  // reads aggregate outcomes only
	RoleAdmin       Role = "admin"       // runs the registry
)

// Roles lists every role.
var Roles = []Role{RoleEHR, RoleCoordinator, RoleResearcher, RoleAdmin}

// Valid says whether r is one of the roles.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// coordinatorTypes are the registry's resources a coordinator reads: their patients, what was
// done and found, and who did it.
var coordinatorTypes = []string{
	"Patient", "Condition", "Procedure", "MedicationAdministration", "Observation",
	"AdverseEvent", "Encounter", "Organization", "Practitioner",
}

// DefaultScopes are the scopes a client of the role is registered with unless others are
// given, and those a person signed in through OIDC gets.
//
// A coordinator reads the registry's resources (the routes limit them to their sites'
// patients), reads, searches and updates the follow-up Tasks the scheduler makes (accepting,
// holding or failing one) but neither creates nor deletes them, and records a withdrawal from
// follow-up as an EpisodeOfCare.
func DefaultScopes(r Role) Scopes {
	switch r {
	case RoleEHR:
		return MustParseScopes("system/*.read system/*.write")
	case RoleCoordinator:
		s := ScopeWorklistRead + " system/Task.rus system/EpisodeOfCare.crus"
		for _, t := range coordinatorTypes {
			s += " system/" + t + ".rs"
		}
		return MustParseScopes(s)
	case RoleResearcher:
		return MustParseScopes(ScopeOutcomesRead)
	case RoleAdmin:
		return MustParseScopes("system/*.* " + ScopeAdmin)
	}
	return Scopes{}
}

// The kinds of principal.
const (
	KindClient   = "client"   // a registered client, by an access token this server issued
	KindUser     = "user"     // a person, by a token from a configured OpenID Connect issuer
	KindOperator = "operator" // a command run on the server itself
)

// Principal is who a request acts for.
type Principal struct {
	Kind    string // KindClient, KindUser or KindOperator
	Subject string // the client id, or the OIDC subject as "iss|sub"
	Name    string // the client's name, or the person's name or e-mail
	Role    Role
	Sites   []string // Organization ids a coordinator is limited to; empty = none
	Scopes  Scopes
}

// String names the principal for logs.
func (p *Principal) String() string {
	return fmt.Sprintf("%s %s (%s)", p.Kind, p.Subject, p.Role)
}

// Operator is the principal of a command an operator runs on the server (cartreg import,
// schedule run): an administrator, trusted because they can already reach the database.
func Operator(name string) *Principal {
	return &Principal{Kind: KindOperator, Subject: name, Name: name, Role: RoleAdmin, Scopes: DefaultScopes(RoleAdmin)}
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal ctx carries, if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
