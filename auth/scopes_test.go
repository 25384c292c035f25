package auth_test

import (
	"testing"

	"github.com/cartreg/cartreg/auth"
)

func TestScopesAllow(t *testing.T) {
	t.Parallel()
	type check struct {
		resource string
		access   auth.Access
		want     bool
	}
	cases := []struct {
		scopes string
		checks []check
	}{
		{"system/Observation.write", []check{
			{"Observation", auth.Create, true}, {"Observation", auth.Update, true}, {"Observation", auth.Delete, true},
			{"Observation", auth.Read, false}, {"Patient", auth.Create, false}, {"*", auth.Create, false},
		}},
		{"system/Patient.rs", []check{
			{"Patient", auth.Read, true}, {"Patient", auth.Search, true}, {"Patient", auth.Read | auth.Search, true},
			{"Patient", auth.Create, false}, {"Patient", auth.Update, false}, {"Patient", auth.Delete, false},
			{"Observation", auth.Read, false},
		}},
		{"system/*.read", []check{
			{"Patient", auth.Read, true}, {"Observation", auth.Search, true}, {"*", auth.Read, true},
			{"Patient", auth.Update, false},
		}},
		{"system/Task.cruds", []check{
			{"Task", auth.Create | auth.Read | auth.Update | auth.Delete | auth.Search, true}, {"Patient", auth.Read, false},
		}},
		{"system/Task.rus system/Task.c", []check{{"Task", auth.Create | auth.Update, true}, {"Task", auth.Delete, false}}},
		{"system/*.*", []check{{"Anything", auth.Delete, true}, {"*", auth.Create, true}}},
		{"system/Observation.read system/*.write", []check{{"Observation", auth.Read | auth.Create, true}, {"Patient", auth.Read, false}}},
		{"cartreg/outcomes.read", []check{{"Patient", auth.Read, false}, {"*", auth.Read, false}}},
		{"", []check{{"Patient", auth.Read, false}}},
	}
	for _, c := range cases {
		s, err := auth.ParseScopes(c.scopes)
		if err != nil {
			t.Fatalf("ParseScopes(%q): %v", c.scopes, err)
		}
		for _, ch := range c.checks {
			if got := s.Allows(ch.resource, ch.access); got != ch.want {
				t.Errorf("%q allows %s %s = %v, want %v", c.scopes, ch.access, ch.resource, got, ch.want)
			}
		}
	}
}

func TestParseScopesRefuses(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"patient/Observation.read", "user/*.read", "system/Observation.rs?category=laboratory",
		"system/Observation.sr", "system/Observation.x", "system/Observation.", "system/observation.read",
		"system/Observation", "cartreg/everything", "openid", "launch/patient",
	} {
		if _, err := auth.ParseScopes(s); err == nil {
			t.Errorf("ParseScopes(%q) succeeded", s)
		}
	}
}

func TestScopesWithinAndString(t *testing.T) {
	t.Parallel()
	registered := auth.MustParseScopes("system/*.read system/Observation.write cartreg/worklist.read")
	for req, want := range map[string]bool{
		"system/Patient.rs":                         true,
		"system/Patient.read system/Observation.cu": true,
		"system/*.rs cartreg/worklist.read":         true,
		"system/Patient.write":                      false,
		"system/*.write":                            false,
		"cartreg/admin":                             false,
		"system/*.*":                                false,
	} {
		ok, _ := auth.MustParseScopes(req).Within(registered)
		if ok != want {
			t.Errorf("%q within %q = %v, want %v", req, registered, ok, want)
		}
	}
	if got := auth.MustParseScopes("system/Patient.rs  system/Patient.rs cartreg/admin").String(); got != "system/Patient.rs cartreg/admin" {
		t.Errorf("String = %q", got)
	}
	for _, r := range auth.Roles {
		if auth.DefaultScopes(r).Empty() {
			t.Errorf("role %s has no default scopes", r)
		}
	}
}
