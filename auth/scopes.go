package auth

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Access is one kind of thing a scope may permit on a resource type; values combine as bits.
type Access uint8

// The kinds of access, as SMART v2 names them (c r u d s).
const (
	Read Access = 1 << iota
	Search
	Create
	Update
	Delete
)

// The SMART v1 permissions as sets of access.
const (
	v1Read  = Read | Search
	v1Write = Create | Update | Delete
	allOf   = Read | Search | Create | Update | Delete
)

// String names the access in SMART v2 letters, such as "rs".
func (a Access) String() string {
	var b strings.Builder
	for i, c := range "cruds" {
		if a&v2Letters[i] != 0 {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// v2Letters is the access of each letter of "cruds", in that order.
var v2Letters = [5]Access{Create, Read, Update, Delete, Search}

// The plain (non-resource) scopes this server knows.
const (
	ScopeOutcomesRead = "cartreg/outcomes.read" // the aggregate outcomes of /registry/outcomes
	ScopeWorklistRead = "cartreg/worklist.read" // the follow-up work lists and a patient's follow-up
	ScopeAdmin        = "cartreg/admin"         // administration: clients, keys, operations
)

var plainScopes = []string{ScopeOutcomesRead, ScopeWorklistRead, ScopeAdmin}

// Scopes is a parsed set of scopes: SMART resource scopes in the system context, v1
// (system/Observation.read, .write, .*) or v2 (system/Patient.rs, .cruds), and the plain
// scopes above. The zero value allows nothing.
//
// Refused when parsed: patient/ and user/ scopes (a backend client has no launch patient and
// no user; a person's reach comes from their role and sites), and v2 scopes with a ?query
// (system/Observation.rs?category=…): honouring only part of such a scope would widen it, and
// honouring it fully needs a search on every read.
type Scopes struct {
	list []scope
}

type scope struct {
	raw      string
	plain    bool
	resource string // a resource type, or "*"
	access   Access
}

var (
	resourceTypePattern = regexp.MustCompile(`^(\*|[A-Z][A-Za-z]{1,63})$`)
	v2Pattern           = regexp.MustCompile(`^c?r?u?d?s?$`)
)

// ParseScopes reads a space-separated scope list, as in an OAuth scope parameter. Repeated
// scopes count once.
func ParseScopes(s string) (Scopes, error) {
	var out Scopes
	for _, raw := range strings.Fields(s) {
		sc, err := parseScope(raw)
		if err != nil {
			return Scopes{}, err
		}
		if !slices.ContainsFunc(out.list, func(x scope) bool { return x.raw == raw }) {
			out.list = append(out.list, sc)
		}
	}
	return out, nil
}

// MustParseScopes is ParseScopes for scopes written in the code; it panics on an error.
func MustParseScopes(s string) Scopes {
	sc, err := ParseScopes(s)
	if err != nil {
		panic(err)
	}
	return sc
}

func parseScope(raw string) (scope, error) {
	if slices.Contains(plainScopes, raw) {
		return scope{raw: raw, plain: true}, nil
	}
	context, rest, ok := strings.Cut(raw, "/")
	if !ok || strings.HasPrefix(raw, "cartreg/") {
		return scope{}, fmt.Errorf("scope %q is unknown here; plain scopes are %s", raw, strings.Join(plainScopes, ", "))
	}
	switch context {
	case "system":
	case "patient", "user":
		return scope{}, fmt.Errorf("scope %q: only system/ scopes are granted here (backend services have no launch patient or user)", raw)
	default:
		return scope{}, fmt.Errorf("scope %q: a SMART scope starts with system/", raw)
	}
	if strings.Contains(rest, "?") {
		return scope{}, fmt.Errorf("scope %q: scopes with a ?query are not supported", raw)
	}
	resource, perm, ok := strings.Cut(rest, ".")
	if !ok || !resourceTypePattern.MatchString(resource) {
		return scope{}, fmt.Errorf("scope %q: want system/<ResourceType or *>.<permission>", raw)
	}
	sc := scope{raw: raw, resource: resource}
	switch perm {
	case "read":
		sc.access = v1Read
	case "write":
		sc.access = v1Write
	case "*":
		sc.access = allOf
	default:
		if perm == "" || !v2Pattern.MatchString(perm) {
			return scope{}, fmt.Errorf("scope %q: permission %q is neither read, write, * nor SMART v2 letters in the order cruds", raw, perm)
		}
		for i, c := range "cruds" {
			if strings.ContainsRune(perm, c) {
				sc.access |= v2Letters[i]
			}
		}
	}
	return sc, nil
}

// Allows says whether the scopes permit every kind of access in access on resources of
// resourceType. Asking about "*" is answered only by wildcard scopes.
func (s Scopes) Allows(resourceType string, access Access) bool {
	if access == 0 {
		return false
	}
	var granted Access
	for _, sc := range s.list {
		if !sc.plain && (sc.resource == "*" || sc.resource == resourceType) {
			granted |= sc.access
		}
	}
	return granted&access == access
}

// Has says whether the plain scope name is among the scopes.
func (s Scopes) Has(name string) bool {
	return slices.ContainsFunc(s.list, func(sc scope) bool { return sc.plain && sc.raw == name })
}

// Empty says whether there are no scopes at all.
func (s Scopes) Empty() bool { return len(s.list) == 0 }

// String is the scopes as a space-separated list, in the order they were given.
func (s Scopes) String() string {
	raws := make([]string, len(s.list))
	for i, sc := range s.list {
		raws[i] = sc.raw
	}
	return strings.Join(raws, " ")
}

// Within says whether every scope of s is granted by limit: a plain scope must be in limit,
// and a resource scope's every kind of access must be allowed by limit's scopes for its
// resource type (a wildcard by wildcards only). It returns the first scope that is not.
func (s Scopes) Within(limit Scopes) (bool, string) {
	for _, sc := range s.list {
		if sc.plain {
			if !limit.Has(sc.raw) {
				return false, sc.raw
			}
			continue
		}
		if !limit.Allows(sc.resource, sc.access) {
			return false, sc.raw
		}
	}
	return true, ""
}

// MarshalText writes the scopes as String does, so they read as one string in JSON.
func (s Scopes) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses the scopes as ParseScopes does.
func (s *Scopes) UnmarshalText(b []byte) error {
	sc, err := ParseScopes(string(b))
	if err != nil {
		return err
	}
	*s = sc
	return nil
}
