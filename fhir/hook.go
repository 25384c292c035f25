package fhir

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A Change is one resource version a transaction wrote.
type Change struct {
	Type, ID string
	Body     map[string]any // nil when the version is a deletion
}

// A WriteHook sees the resources each database transaction wrote, in that transaction, before
// it commits. It is how state derived from FHIR data (the registry's projection) stays exactly
// as current as the data: an error from the hook rolls the whole write back. Issues that blame
// one of the written resources name it in Issue.Resource, so a Bundle's error can point at the
// entry.
type WriteHook interface {
	BeforeCommit(ctx context.Context, tx pgx.Tx, changes []Change) error
}

// SetHook installs h; call it before the store is used.
func (s *Store) SetHook(h WriteHook) { s.hook = h }

// trackedTx is the transaction InTx hands out: a pgx.Tx that remembers what was written in it.
type trackedTx struct {
	pgx.Tx
	changes []Change
}

// record notes written versions for the hook. Writes made outside InTx (there are none in
// cartreg) would go unseen, so they are refused loudly rather than silently skipped.
func (s *Store) record(tx DBTX, versions []*Version, resources []*Resource) error {
	if s.hook == nil {
		return nil
	}
	t, ok := tx.(*trackedTx)
	if !ok {
		return fmt.Errorf("store write outside Store.InTx: the write hook would not see it")
	}
	for i, v := range versions {
		var body map[string]any
		if !v.Deleted {
			body = resources[i].Body
		}
		t.changes = append(t.changes, Change{Type: v.Type, ID: v.ID, Body: body})
	}
	return nil
}

// Flush runs the write hook on what tx has written since the last flush. InTx flushes before
// it commits; a transaction Bundle flushes itself first so that the hook's issues can be
// placed on the entries they concern.
func (s *Store) Flush(ctx context.Context, tx DBTX) error {
	t, ok := tx.(*trackedTx)
	if !ok || s.hook == nil || len(t.changes) == 0 {
		return nil
	}
	changes := t.changes
	t.changes = nil
	return s.hook.BeforeCommit(ctx, t, latestChanges(changes))
}

// latestChanges keeps the last change of each resource: a resource written twice in one
// transaction is seen as it will be committed.
func latestChanges(changes []Change) []Change {
	last := make(map[string]int, len(changes))
	for i, c := range changes {
		last[c.Type+"/"+c.ID] = i
	}
	out := changes[:0:0]
	for i, c := range changes {
		if last[c.Type+"/"+c.ID] == i {
			out = append(out, c)
		}
	}
	return out
}

// placeIssues rewrites issues that name a resource (Issue.Resource) so that they name the
// Bundle entry that wrote it and locate the problem inside that entry.
func placeIssues(err error, entries []*entry) error {
	var o *Outcome
	if !errors.As(err, &o) {
		return err
	}
	byResource := map[string]*entry{}
	for _, e := range entries {
		if e.resourceType != "" && e.id != "" {
			byResource[e.resourceType+"/"+e.id] = e
		}
	}
	out := &Outcome{Status: o.Status}
	for _, is := range o.Issues {
		if e := byResource[is.Resource]; e != nil {
			placed := e.atEntry(&Outcome{Status: o.Status, Issues: []Issue{is}}).(*Outcome)
			out.Issues = append(out.Issues, placed.Issues...)
			continue
		}
		if is.Resource != "" && !strings.Contains(is.Diagnostics, is.Resource) {
			is.Diagnostics = is.Resource + ": " + is.Diagnostics
		}
		out.Issues = append(out.Issues, is)
	}
	return out
}
