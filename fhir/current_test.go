package fhir_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// Other packages read the store through Current, ByIdentifierSystem and the two relations:
// each must show the current version only, and never a deleted resource.
func TestReadsForOtherPackages(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	store := fhir.NewStore(db, searchparam.Default(), time.Now)
	write := func(id, value, family string) {
		t.Helper()
		res, err := fhir.Parse([]byte(fmt.Sprintf(`{"resourceType": "Patient", "id": %q,
			"identifier": [{"system": "http://example.org/mrn", "value": %q}], "name": [{"family": %q}]}`, id, value, family)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Update(ctx, db, res, nil); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "2", "First")
	write("a", "2", "Second") // version 2 is current
	write("b", "1", "Other")
	write("gone", "0", "Deleted")
	if _, err := store.Delete(ctx, db, "Patient", "gone"); err != nil {
		t.Fatal(err)
	}

	got, err := store.Current(ctx, db, "Patient", []string{"a", "b", "gone", "unknown"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] == nil || got["b"] == nil {
		t.Fatalf("Current: %v, want a and b", got)
	}
	if a := got["a"]; a.VersionID != 2 || !strings.Contains(string(a.JSON), "Second") || a.Type != "Patient" || a.ID != "a" {
		t.Errorf("Current a: version %d %s", a.VersionID, a.JSON)
	}
	if none, err := store.Current(ctx, db, "Patient", nil); err != nil || len(none) != 0 {
		t.Errorf("Current of no ids: %v, %v", none, err)
	}

	found, err := store.ByIdentifierSystem(ctx, db, "Patient", "http://example.org/mrn")
	if err != nil {
		t.Fatal(err)
	}
	if want := []fhir.Identified{{ID: "b", Value: "1"}, {ID: "a", Value: "2"}}; fmt.Sprint(found) != fmt.Sprint(want) {
		t.Errorf("ByIdentifierSystem: %v, want %v (by value, the deleted one left out)", found, want)
	}

	var n, version int
	if err := db.QueryRow(ctx, `SELECT count(*), max(version_id) FROM `+fhir.CurrentRelation+` c
		WHERE c.resource_type = 'Patient' AND c.body LIKE '%Second%' OR c.resource_id = 'gone'`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != 1 || version != 2 {
		t.Errorf("CurrentRelation: %d rows, version %d; want a's current version alone", n, version)
	}
	if err := db.QueryRow(ctx, `SELECT count(*), max(version_id) FROM `+fhir.VersionRelation+` v
		WHERE v.resource_type = 'Patient' AND v.resource_id = 'a'`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != 2 || version != 2 {
		t.Errorf("VersionRelation: %d versions of a, the latest %d; want 2 and 2", n, version)
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "A-1.b": true, strings.Repeat("x", 64): true, "...": true, ".a": true,
		".": false, "..": false, // path segments in a URL
		"": false, strings.Repeat("x", 65): false, "a_b": false, "a/b": false, "a b": false, "é": false,
	} {
		if got := fhir.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}
