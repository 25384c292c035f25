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
	Type, ID  string
	VersionID int
	Body      map[string]any // nil when the version is a deletion
}

// A WriteHook sees the resources each database transaction wrote, in that transaction, before
// it commits. It is how state derived from FHIR data (the registry's projection, the follow-up
// Tasks, Subscription notifications) stays exactly as current as the data: an error from a
// hook rolls the whole write back. Issues that blame one of the written resources name it in
// Issue.Resource, so a Bundle's error can point at the entry.
//
// A hook may itself write resources through the store in tx (the follow-up hook completes a
// Task when an assessment arrives); those writes are shown to every hook in a further round,
// so a Subscription on Task hears of them too.
type WriteHook interface {
	BeforeCommit(ctx context.Context, tx pgx.Tx, changes []Change) error
}

// AddHook appends h to the hooks every transaction runs, in the order they were added; call it
// before the store is used.
func (s *Store) AddHook(h WriteHook) { s.hooks = append(s.hooks, h) }

// trackedTx is the transaction InTx hands out: a pgx.Tx that remembers what was written in it.
type trackedTx struct {
	pgx.Tx
	changes []Change
	// byHooks are the resources ("Type/id") the hooks themselves wrote in this transaction.
	byHooks map[string]bool
	// pending are statements queued to go with the next one (SendWithNext).
	pending []pending
	// begin is set while the transaction has not begun (Store.InTx): Tx is nil until the first
	// statement, which goes to PostgreSQL in one batch with the BEGIN.
	begin *lazyBegin
}

// record notes written versions for the hooks. Writes made outside InTx (there are none in
// cartreg) would go unseen, so they are refused loudly rather than silently skipped.
func (s *Store) record(tx DBTX, versions []*Version, resources []*Resource) error {
	if len(s.hooks) == 0 {
		return nil
	}
	t, ok := tx.(*trackedTx)
	if !ok {
		return fmt.Errorf("store write outside Store.InTx: the write hooks would not see it")
	}
	for i, v := range versions {
		var body map[string]any
		if !v.Deleted {
			body = resources[i].Body
		}
		t.changes = append(t.changes, Change{Type: v.Type, ID: v.ID, VersionID: v.VersionID, Body: body})
	}
	return nil
}

// maxHookRounds bounds how often hooks that write may set each other off in one transaction:
// the follow-up hook writes Tasks, which set off nothing that writes again, so two rounds are
// the most cartreg needs; more is a loop.
const maxHookRounds = 4

// Flush runs the write hooks on what tx has written since the last flush, and again on what
// the hooks wrote, until nothing new was written. InTx flushes before it commits; a
// transaction Bundle flushes itself first so that the hooks' issues can be placed on the
// entries they concern.
func (s *Store) Flush(ctx context.Context, tx DBTX) error {
	t, ok := tx.(*trackedTx)
	if !ok {
		return nil
	}
	// Without hooks no changes are recorded and the loop is empty, but statements queued by
	// SendWithNext must still go before the commit.
	for round := 0; len(t.changes) > 0; round++ {
		if round == maxHookRounds {
			return fmt.Errorf("write hooks still writing after %d rounds: a loop", maxHookRounds)
		}
		changes := latestChanges(t.changes)
		t.changes = nil
		if round > 0 { // written by the hooks of the round before
			if t.byHooks == nil {
				t.byHooks = map[string]bool{}
			}
			for _, c := range changes {
				t.byHooks[c.Type+"/"+c.ID] = true
			}
		}
		for _, h := range s.hooks {
			if err := h.BeforeCommit(ctx, t, changes); err != nil {
				return err
			}
		}
	}
	return t.flushPending(ctx) // what the hooks queued (SendWithNext) and no statement carried
}

// settle runs the write hooks on what tx has written so far, and returns v as it stands
// after them: the version a hook wrote on top of it (a Subscription the server made active)
// when there is one, so the client is answered with what is stored.
func (s *Store) settle(ctx context.Context, tx DBTX, v *Version) (*Version, error) {
	if err := s.Flush(ctx, tx); err != nil {
		return nil, err
	}
	t, ok := tx.(*trackedTx)
	if !ok || v == nil || !t.byHooks[v.Type+"/"+v.ID] {
		return v, nil
	}
	return s.Read(ctx, tx, v.Type, v.ID)
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

type dryRunKey struct{}

// IsDryRun reports whether ctx is that of a Store.DryRun: its writes will be rolled back, so a
// write hook that records something for a written resource's sake alone (the audit trail's
// record of who wrote it) leaves it to the caller.
func IsDryRun(ctx context.Context) bool {
	dry, _ := ctx.Value(dryRunKey{}).(bool)
	return dry
}

// DryRun runs fn and then every write hook on what fn wrote, exactly as InTx would, and rolls
// the transaction back whatever happens: the answer to "would this write be accepted?" with
// every rule a write runs, the registry's business rules included, and nothing kept. The
// context fn and the hooks get says IsDryRun. A hook's side effects must live in the
// transaction (as the outbox's rows do) for this to hold.
func (s *Store) DryRun(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx = context.WithValue(ctx, dryRunKey{}, true)
	t := s.beginLazily(ctx)
	defer t.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // rolling back is the point; a failure leaves nothing either
	if err := fn(ctx, t); err != nil {
		return StatementTimeoutOutcome(ctx, err)
	}
	return StatementTimeoutOutcome(ctx, s.Flush(ctx, t))
}
