package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// recordN commits n events, one transaction each, the i-th recorded i minutes after t0.
func recordN(t *testing.T, r *Recorder, db *pgxpool.Pool, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		ev := sample(i)
		ev.Time = t0.Add(time.Duration(i) * time.Minute)
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return r.Record(ctx, tx, ev) }); err != nil {
			t.Fatal(err)
		}
	}
}

// sealAll seals until want rows have been sealed. The test cluster is shared: a transaction
// open in another test's database holds the horizon back for a moment.
func sealAll(t *testing.T, r *Recorder, want int) {
	t.Helper()
	total := 0
	deadline := time.Now().Add(20 * time.Second)
	for total < want {
		n, err := r.Seal(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if total < want {
			if time.Now().After(deadline) {
				t.Fatalf("sealed %d rows, want %d", total, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if total != want {
		t.Fatalf("sealed %d rows, want %d", total, want)
	}
}

func verify(t *testing.T, db *pgxpool.Pool) Report {
	t.Helper()
	rep, err := Verify(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// tamper runs SQL as someone who has switched off the table's guard trigger: what an
// administrator could do.
func tamper(t *testing.T, db *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		t.Fatalf("tampering: %v", err)
	}
}

func TestSealedChainVerifies(t *testing.T) {
	t.Parallel()
	r, db := newRecorder(t, Config{})
	if rep := verify(t, db); !rep.OK || rep.Sealed != 0 || rep.LastHash != hex.EncodeToString(genesis) {
		t.Fatalf("empty trail: %+v", rep)
	}
	recordN(t, r, db, 0, 10)
	rep := verify(t, db)
	if !rep.OK || rep.Unsealed != 10 || rep.Sealed != 0 {
		t.Fatalf("before sealing: %+v", rep)
	}
	sealAll(t, r, 10)
	rep = verify(t, db)
	if !rep.OK || rep.Sealed != 10 || rep.Unsealed != 0 || rep.LastSeq != 10 {
		t.Fatalf("after sealing: %+v", rep)
	}
	head := rep.LastHash
	recordN(t, r, db, 10, 5)
	sealAll(t, r, 5)
	rep = verify(t, db)
	if !rep.OK || rep.LastSeq != 15 || rep.LastHash == head {
		t.Fatalf("after a second seal: %+v", rep)
	}
	if n, err := r.Seal(context.Background()); err != nil || n != 0 {
		t.Fatalf("sealing nothing new sealed %d (%v)", n, err)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		tamper  func(t *testing.T, db *pgxpool.Pool)
		badSeq  int64
		problem string
	}{
		{"a searchable column edited", func(t *testing.T, db *pgxpool.Pool) {
			tamper(t, db, `UPDATE audit_event SET agent_who = 'someone-else' WHERE chain_seq = 4`)
		}, 4, "agent_who"},
		{"the event edited", func(t *testing.T, db *pgxpool.Pool) {
			tamper(t, db, `UPDATE audit_event SET event = jsonb_set(event, '{outcome}', '403') WHERE chain_seq = 5`)
		}, 5, "content hash"},
		{"the event and its content hash rewritten", func(t *testing.T, db *pgxpool.Pool) {
			ctx := context.Background()
			var raw []byte
			if err := db.QueryRow(ctx, `SELECT event::text FROM audit_event WHERE chain_seq = 6`).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			var ev Event
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatal(err)
			}
			ev.Patients = nil // hide which patient was looked at
			body, _ := json.Marshal(ev)
			tamper(t, db, `UPDATE audit_event SET event = $1, patients = '{}', content_hash = $2 WHERE chain_seq = 6`,
				string(body), contentHash(ev))
		}, 6, "chain hash"},
		{"a row in the middle deleted", func(t *testing.T, db *pgxpool.Pool) {
			tamper(t, db, `DELETE FROM audit_event WHERE chain_seq = 3`)
		}, 3, "missing"},
		{"two rows swapped", func(t *testing.T, db *pgxpool.Pool) {
			tamper(t, db, `UPDATE audit_event SET chain_seq = -chain_seq WHERE chain_seq IN (7, 8)`)
			tamper(t, db, `UPDATE audit_event SET chain_seq = CASE chain_seq WHEN -7 THEN 8 ELSE 7 END WHERE chain_seq < 0`)
		}, 7, "chain hash"},
		{"an unsealed row edited", func(t *testing.T, db *pgxpool.Pool) {
			tamper(t, db, `INSERT INTO audit_event (event_id, recorded, action, interaction, outcome, agent_kind,
				agent_who, agent_role, source, request_id, entities, patients, event, content_hash)
				SELECT gen_random_uuid(), recorded, action, interaction, outcome, agent_kind, agent_who,
				agent_role, source, request_id, entities, patients, event, content_hash
				FROM audit_event WHERE chain_seq = 2`)
		}, 0, "unsealed row: column event_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, db := newRecorder(t, Config{})
			recordN(t, r, db, 0, 10)
			sealAll(t, r, 10)
			tc.tamper(t, db)
			rep := verify(t, db)
			if rep.OK || rep.BadSeq != tc.badSeq || !strings.Contains(rep.Problem, tc.problem) {
				t.Fatalf("report %+v, want seq %d and a problem about %q", rep, tc.badSeq, tc.problem)
			}
			if tc.badSeq > 0 && tc.problem != "missing" && rep.BadEventID == "" {
				t.Errorf("the report does not name the event at fault: %+v", rep)
			}
		})
	}
}

func TestTheGuardRefusesEditsAndDeletes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{})
	recordN(t, r, db, 0, 2)
	sealAll(t, r, 2)
	for _, sql := range []string{
		`UPDATE audit_event SET agent_who = 'x' WHERE chain_seq = 1`,
		`UPDATE audit_event SET chain_seq = 9 WHERE chain_seq = 1`,
		`DELETE FROM audit_event WHERE chain_seq = 1`,
		`TRUNCATE audit_event`,
	} {
		if _, err := db.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "audit events") {
			t.Errorf("%s: err = %v, want the guard's refusal", sql, err)
		}
	}
}

func TestConcurrentSealsMakeOneChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{})
	other := NewRecorder(db, Config{}, fixedClock, quiet) // a second replica
	const rounds, perRound = 20, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	sealed := 0
	stop := make(chan struct{})
	for _, rec := range []*Recorder{r, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := rec.Seal(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				sealed += n
				mu.Unlock()
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	for i := range rounds {
		recordN(t, r, db, i*perRound, perRound)
	}
	close(stop)
	wg.Wait()
	sealAll(t, r, rounds*perRound-sealed)
	rep := verify(t, db)
	if !rep.OK || rep.Sealed != rounds*perRound || rep.LastSeq != rounds*perRound {
		t.Fatalf("after concurrent seals: %+v", rep)
	}
}

func TestSealWaitsForATransactionStillOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{})

	held, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback(ctx)
	early := sample(0)
	early.RequestID = "held-open"
	if err := r.Record(ctx, held, early); err != nil {
		t.Fatal(err)
	}
	recordN(t, r, db, 1, 3) // committed while the first is still open

	if n, err := r.Seal(ctx); err != nil || n != 0 {
		t.Fatalf("Seal sealed %d rows past a transaction still open (%v)", n, err)
	}
	if rep := verify(t, db); !rep.OK || rep.Unsealed != 3 || rep.Sealed != 0 {
		t.Fatalf("while the transaction is open: %+v", rep)
	}
	if err := held.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sealAll(t, r, 4)
	var first string
	if err := db.QueryRow(ctx, `SELECT request_id FROM audit_event WHERE chain_seq = 1`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	if first != "held-open" {
		t.Errorf("chain starts with %s, want the transaction that began first", first)
	}
	if rep := verify(t, db); !rep.OK || rep.Sealed != 4 {
		t.Fatalf("after it committed: %+v", rep)
	}
}

func TestPruneKeepsTheRestVerifiable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{})
	recordN(t, r, db, 0, 10) // recorded t0, t0+1m, … t0+9m; chain order is the same
	// One more, committed last but recorded earliest: it comes 11th in the chain, so a cut
	// at t0+5m must stop before row 6 even though row 11 is older.
	old := sample(99)
	old.Time = t0.Add(-time.Hour)
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return r.Record(ctx, tx, old) }); err != nil {
		t.Fatal(err)
	}
	sealAll(t, r, 11)

	n, err := Prune(ctx, db, t0.Add(5*time.Minute))
	if err != nil || n != 5 {
		t.Fatalf("Prune deleted %d (%v), want the first 5", n, err)
	}
	rep := verify(t, db)
	if !rep.OK || rep.AnchorSeq != 5 || rep.Sealed != 6 || rep.LastSeq != 11 {
		t.Fatalf("after pruning: %+v", rep)
	}
	if n, err := Prune(ctx, db, t0.Add(5*time.Minute)); err != nil || n != 0 {
		t.Fatalf("a second prune deleted %d (%v)", n, err)
	}

	// Everything goes; the chain carries on from the anchor.
	if n, err := Prune(ctx, db, t0.Add(time.Hour)); err != nil || n != 6 {
		t.Fatalf("pruning the rest deleted %d (%v), want 6", n, err)
	}
	recordN(t, r, db, 20, 3)
	sealAll(t, r, 3)
	rep = verify(t, db)
	if !rep.OK || rep.AnchorSeq != 11 || rep.Sealed != 3 || rep.LastSeq != 14 {
		t.Fatalf("after pruning everything and sealing more: %+v", rep)
	}
	// Deleting the row after the anchor is still caught.
	tamper(t, db, `DELETE FROM audit_event WHERE chain_seq = 12`)
	if rep := verify(t, db); rep.OK || rep.BadSeq != 12 {
		t.Fatalf("a deleted first row after the anchor: %+v", rep)
	}
}

func TestPruneExpiredUsesTheRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{Retention: 7 * time.Minute})
	if r.Config().Retention != 7*time.Minute || (Config{}).withDefaults().Retention != 6*365*24*time.Hour {
		t.Fatal("retention defaults wrong")
	}
	// The clock says t0; events from t0-10m to t0-1m: those before t0-7m go.
	for i := 1; i <= 10; i++ {
		ev := sample(i)
		ev.Time = t0.Add(-time.Duration(11-i) * time.Minute)
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return r.Record(ctx, tx, ev) }); err != nil {
			t.Fatal(err)
		}
	}
	sealAll(t, r, 10)
	if n, err := r.PruneExpired(ctx); err != nil || n != 3 {
		t.Fatalf("PruneExpired deleted %d (%v), want 3", n, err)
	}
	if rep := verify(t, db); !rep.OK {
		t.Fatalf("%+v", rep)
	}
}

func TestJobsSealAndPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{Retention: time.Minute})
	recordN(t, r, db, 0, 3) // t0, t0+1m, t0+2m; the clock says t0, so none has expired
	seal, prune := r.SealJob("* * * * *"), r.PruneJob("@daily")
	if seal.Name == prune.Name || seal.Spec != "* * * * *" || prune.Spec != "@daily" {
		t.Fatalf("jobs %+v %+v", seal, prune)
	}
	deadline := time.Now().Add(20 * time.Second)
	for verify(t, db).Sealed < 3 {
		if err := seal.Run(ctx, t0); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the seal job did not seal")
		}
	}
	if err := prune.Run(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 3 {
		t.Fatalf("%d events left after pruning nothing expired, want 3", n)
	}
}
