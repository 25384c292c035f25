package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
)

// Publish stores the registry's CodeSystems and StructureDefinitions (every file of
// definitions/) and the server's own SearchParameters (searchparam.CustomDefinitions) as FHIR
// resources under their own ids, so clients find them at
// /fhir/CodeSystem, /fhir/StructureDefinition and /fhir/SearchParameter. A
// definition already stored as it is in this build is left alone (no new version on every
// start); one that changed gets a new version. Replicas starting together take turns.
func Publish(ctx context.Context, store *fhir.Store) (updated int, err error) {
	files, err := fs.Glob(Definitions, "definitions/*.json")
	if err != nil {
		return 0, err
	}
	var resources []*fhir.Resource
	for _, f := range files {
		raw, err := Definitions.ReadFile(f)
		if err != nil {
			return 0, err
		}
		res, err := fhir.Parse(raw)
		if err != nil {
			return 0, fmt.Errorf("registry definition %s: %w", f, err)
		}
		resources = append(resources, res)
	}
	params, err := searchparam.CustomDefinitions()
	if err != nil {
		return 0, err
	}
	for _, raw := range params {
		res, err := fhir.Parse(raw)
		if err != nil {
			return 0, fmt.Errorf("search parameter definition: %w", err)
		}
		resources = append(resources, res)
	}
	err = store.InTx(ctx, func(tx pgx.Tx) error {
		updated = 0
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('cartreg.registry.publish', 0))`); err != nil {
			return err
		}
		for _, res := range resources {
			same, err := storedAlready(ctx, store, tx, res)
			if err != nil {
				return err
			}
			if same {
				continue
			}
			if _, err := store.Update(ctx, tx, res.Clone(), nil); err != nil {
				return fmt.Errorf("publishing %s/%s: %w", res.Type, res.ID, err)
			}
			updated++
		}
		return nil
	})
	return updated, err
}

func storedAlready(ctx context.Context, store *fhir.Store, tx pgx.Tx, res *fhir.Resource) (bool, error) {
	v, err := store.Read(ctx, tx, res.Type, res.ID)
	var missing *fhir.Outcome
	if errors.As(err, &missing) {
		return false, nil // not stored yet, or deleted: publish it
	}
	if err != nil {
		return false, err
	}
	stored, err := fhir.Parse(v.JSON)
	if err != nil {
		return false, nil //nolint:nilerr // unreadable (an older R4 parser's output?): replace it
	}
	delete(stored.Body, "meta")
	want := res.Clone()
	delete(want.Body, "meta")
	a, err := stored.JSON()
	if err != nil {
		return false, err
	}
	b, err := want.JSON()
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}
