package fhir

import (
	"net/url"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir/searchparam"
)

// Criteria that could select the same resource must collide on a lock (one key in both, held
// exclusively by at least one); criteria that cannot, on the same parameter, must not.
func TestConditionalLocksCollideExactlyWhenCriteriaCouldMatchAlike(t *testing.T) {
	params := searchparam.Default()
	s := NewSearcher(NewStore(nil, params, time.Now), params, "https://registry.example/fhir")
	locks := func(criteria string) []conditionalLock {
		t.Helper()
		values, err := url.ParseQuery(criteria)
		if err != nil {
			t.Fatal(err)
		}
		q, err := s.parseSearch([]string{"Patient"}, values, true, 2, 2)
		if err != nil {
			t.Fatalf("%s: %v", criteria, err)
		}
		return s.conditionalLocks("Patient", q)
	}
	collide := func(a, b string) bool {
		held := map[int64]bool{}
		for _, l := range locks(a) {
			held[l.key] = l.shared
		}
		for _, l := range locks(b) {
			if sh, ok := held[l.key]; ok && !(sh && l.shared) {
				return true
			}
		}
		return false
	}
	for _, c := range [][2]string{
		{"identifier=s|X", "identifier=s|X"},
		{"identifier=s|X", "identifier=s|X&_count=1"},
		{"identifier=s|X", "_sort=family&_elements=id&_summary=true&identifier=s%7CX"},
		{"identifier=s|X", "identifier=X"},
		{"identifier=s|X", "identifier=t|X"},
		{"identifier=s|X", "identifier=s|X&gender=male"},
		{"identifier=s|X", "identifier=s|Y,s|X"},
		{"identifier=s|X", "identifier=s|"},
		{"identifier=s|X", "identifier:not=s|Q"},
		{"identifier=s|X", "identifier:missing=true"},
		{"identifier=s|X&birthdate=2000", "identifier=s|X&birthdate=2001"},
		{"family=Chal", "family:exact=Chalmers"},
		{"family=Chal", "family=Chalmers"},
		{"general-practitioner=Practitioner/1", "general-practitioner=1"},
		{"general-practitioner=Practitioner/1", "general-practitioner:Practitioner=1"},
		{"general-practitioner=Practitioner/1", "general-practitioner=https://registry.example/fhir/Practitioner/1"},
		{"general-practitioner=Practitioner/1", "general-practitioner.name=x"},
		{"_id=a", "_id=a&_count=1"},
		{"_count=1", "_count=2"},
	} {
		if !collide(c[0], c[1]) || !collide(c[1], c[0]) {
			t.Errorf("%q and %q do not collide", c[0], c[1])
		}
	}
	for _, c := range [][2]string{
		{"identifier=s|X", "identifier=s|Y"},
		{"identifier=s|X", "identifier=Y"},
		{"identifier=s|X&_count=1", "identifier=s|Y&_sort=family"},
		{"family:exact=Chalmers", "family:exact=Smith"},
		{"_id=a", "_id=b"},
		{"general-practitioner=Practitioner/1", "general-practitioner=Practitioner/2"},
	} {
		if collide(c[0], c[1]) {
			t.Errorf("%q and %q collide, though no resource can be selected by both on one value", c[0], c[1])
		}
	}
	// Locks come sorted, each key once.
	ls := locks("identifier=s|X,s|Y&identifier=X&gender=male&family=a")
	for i := 1; i < len(ls); i++ {
		if ls[i-1].key >= ls[i].key {
			t.Fatalf("locks out of order or repeated: %v", ls)
		}
	}
}
