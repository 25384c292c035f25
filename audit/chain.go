package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/schedules"
)

// sealBatch is the most rows one seal transaction chains.
const sealBatch = 5000

// lockChain serialises the writers of the chain (Seal and Prune) across replicas, for the
// rest of the transaction.
const lockChain = `SELECT pg_advisory_xact_lock(hashtext('cartreg audit chain'))`

// Seal extends the hash chain over the unsealed events whose inserting transactions have all
// finished, and returns how many it sealed. It is safe to run on several replicas at once:
// they take turns on an advisory lock, and each continues from the chain the last one left.
func (r *Recorder) Seal(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := sealOnce(ctx, r.db)
		total += n
		if err != nil || n < sealBatch {
			return total, err
		}
	}
}

func sealOnce(ctx context.Context, db DBTX) (int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("sealing the audit chain: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, lockChain); err != nil {
		return 0, fmt.Errorf("sealing the audit chain: locking: %w", err)
	}
	// Taken after the lock, by a statement of its own, before this transaction has an id:
	// every transaction with a smaller id has finished, so none of them can still add a row
	// that ought to come before the ones sealed now. A transaction held open keeps the
	// horizon below itself, and the rows of later ones wait for it.
	var horizon string
	if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&horizon); err != nil {
		return 0, fmt.Errorf("sealing the audit chain: reading the snapshot: %w", err)
	}
	seq, prev, err := chainHead(ctx, tx)
	if err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `SELECT id, content_hash FROM audit_event
		WHERE chain_seq IS NULL AND xid < $1::xid8 ORDER BY xid, id LIMIT $2`, horizon, sealBatch)
	if err != nil {
		return 0, fmt.Errorf("sealing the audit chain: reading unsealed events: %w", err)
	}
	var ids, seqs []int64
	var hashes [][]byte
	for rows.Next() {
		var id int64
		var content []byte
		if err := rows.Scan(&id, &content); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sealing the audit chain: %w", err)
		}
		seq++
		prev = chainHash(prev, content)
		ids, seqs, hashes = append(ids, id), append(seqs, seq), append(hashes, prev)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sealing the audit chain: reading unsealed events: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_event a SET chain_seq = u.seq, chain_hash = u.hash
		FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS u(id, seq, hash) WHERE a.id = u.id`,
		ids, seqs, hashes); err != nil {
		return 0, fmt.Errorf("sealing the audit chain: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("sealing the audit chain: committing: %w", err)
	}
	return len(ids), nil
}

// chainHead is the last link of the chain: the last sealed row, else the anchor a prune left,
// else the genesis.
func chainHead(ctx context.Context, db DBTX) (int64, []byte, error) {
	var seq int64
	var hash []byte
	err := db.QueryRow(ctx, `SELECT chain_seq, chain_hash FROM (
			(SELECT chain_seq, chain_hash FROM audit_event WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1)
			UNION ALL
			(SELECT chain_seq, chain_hash FROM audit_anchor ORDER BY chain_seq DESC LIMIT 1)
		) h ORDER BY chain_seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, genesis, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("reading the head of the audit chain: %w", err)
	}
	return seq, hash, nil
}

// Report is what Verify found.
type Report struct {
	// OK is true when every sealed link and every content hash checked out.
	OK bool `json:"ok"`
	// AnchorSeq is where the chain starts: the last row a prune deleted, or 0.
	AnchorSeq int64 `json:"anchorSeq"`
	// Sealed is how many sealed rows were checked, Unsealed how many rows await a seal (their
	// content hashes were checked too).
	Sealed   int64 `json:"sealed"`
	Unsealed int64 `json:"unsealed"`
	// LastSeq and LastHash are the head of the chain as verified, for keeping elsewhere: a later
	// chain that does not pass through them has been rewritten or cut short.
	LastSeq  int64  `json:"lastSeq"`
	LastHash string `json:"lastHash"`
	// BadSeq is the chain sequence number of the first problem (0 for an unsealed row);
	// BadEventID the event at fault, when there is one; Problem says what is wrong.
	BadSeq     int64  `json:"badSeq,omitempty"`
	BadEventID string `json:"badEventId,omitempty"`
	Problem    string `json:"problem,omitempty"`
}

// storedRow is an audit_event row as Verify reads it.
type storedRow struct {
	kind        int
	seq         *int64
	chainHash   []byte
	eventID     *uuid.UUID
	recorded    *time.Time
	action      *string
	interaction *string
	outcome     *int32
	agentKind   *string
	agentWho    *string
	agentRole   *string
	source      *string
	requestID   *string
	entities    []string
	patients    []string
	event       []byte
	content     []byte
}

// Verify walks the chain from its anchor: it recomputes every row's content hash from the
// recorded event, checks that the searchable columns say what the event says, that sequence
// numbers run without a gap, and that each chained hash follows from the one before. It
// reports the first problem: an edited field, a deleted or reordered row. Rows not yet sealed
// are counted and their content checked. Everything is read by one statement, so one snapshot:
// a concurrent seal or prune cannot make a sound chain look broken.
func Verify(ctx context.Context, db DBTX) (Report, error) {
	const columns = `event_id, recorded, action, interaction, outcome, agent_kind, agent_who, agent_role,
		source, request_id, entities, patients, event::text, content_hash`
	rows, err := db.Query(ctx, `
		(SELECT 0 AS k, chain_seq, chain_hash, NULL::uuid, NULL::timestamptz, NULL::text, NULL::text,
			NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text[],
			NULL::text[], NULL::text, NULL::bytea, 0::bigint AS id
		 FROM audit_anchor ORDER BY chain_seq DESC LIMIT 1)
		UNION ALL
		(SELECT 1, chain_seq, chain_hash, `+columns+`, id FROM audit_event WHERE chain_seq IS NOT NULL)
		UNION ALL
		(SELECT 2, NULL, NULL, `+columns+`, id FROM audit_event WHERE chain_seq IS NULL)
		ORDER BY 1, 2, id`)
	if err != nil {
		return Report{}, fmt.Errorf("verifying the audit chain: %w", err)
	}
	defer rows.Close()
	rep := Report{OK: true}
	prev := genesis
	var id int64
	for rows.Next() {
		var row storedRow
		if err := rows.Scan(&row.kind, &row.seq, &row.chainHash, &row.eventID, &row.recorded, &row.action,
			&row.interaction, &row.outcome, &row.agentKind, &row.agentWho, &row.agentRole, &row.source,
			&row.requestID, &row.entities, &row.patients, &row.event, &row.content, &id); err != nil {
			return Report{}, fmt.Errorf("verifying the audit chain: %w", err)
		}
		if !rep.OK {
			continue // counting the rest
		}
		switch row.kind {
		case 0:
			rep.AnchorSeq, rep.LastSeq, prev = *row.seq, *row.seq, row.chainHash
		case 1:
			rep.Sealed++
			seq := *row.seq
			fail := func(format string, args ...any) {
				rep.OK, rep.BadSeq, rep.Problem = false, seq, fmt.Sprintf(format, args...)
				if row.eventID != nil {
					rep.BadEventID = row.eventID.String()
				}
			}
			if seq != rep.LastSeq+1 {
				if seq > rep.LastSeq+1 {
					rep.OK, rep.BadSeq = false, rep.LastSeq+1
					rep.Problem = fmt.Sprintf("chain sequence %d to %d is missing: rows were deleted", rep.LastSeq+1, seq-1)
				} else {
					fail("chain sequence %d follows %d: the chain was rewritten", seq, rep.LastSeq)
				}
				continue
			}
			if problem := checkContent(&row); problem != "" {
				fail("%s", problem)
				continue
			}
			want := chainHash(prev, row.content)
			if !bytes.Equal(want, row.chainHash) {
				fail("chain hash does not follow from sequence %d: a row was reordered, replaced or re-hashed", seq-1)
				continue
			}
			rep.LastSeq, prev = seq, row.chainHash
		case 2:
			rep.Unsealed++
			if problem := checkContent(&row); problem != "" {
				rep.OK, rep.Problem = false, "unsealed row: "+problem
				if row.eventID != nil {
					rep.BadEventID = row.eventID.String()
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return Report{}, fmt.Errorf("verifying the audit chain: %w", err)
	}
	if rep.OK {
		rep.LastHash = hex.EncodeToString(prev)
	}
	return rep, nil
}

// checkContent recomputes a row's content hash from its recorded event and compares the
// searchable columns with the event; it says what disagrees, or "".
func checkContent(row *storedRow) string {
	var ev Event
	if err := json.Unmarshal(row.event, &ev); err != nil {
		return "the recorded event is not readable: " + err.Error()
	}
	if !bytes.Equal(contentHash(ev), row.content) {
		return "content hash does not match the recorded event: the event or its hash was edited"
	}
	str := func(p *string) string {
		if p == nil {
			return "\x00null"
		}
		return *p
	}
	switch {
	case row.eventID == nil || row.eventID.String() != ev.ID:
		return "column event_id differs from the recorded event"
	case row.recorded == nil || !row.recorded.Equal(ev.Time):
		return "column recorded differs from the recorded event"
	case str(row.action) != ev.Action:
		return "column action differs from the recorded event"
	case str(row.interaction) != ev.Interaction:
		return "column interaction differs from the recorded event"
	case row.outcome == nil || int(*row.outcome) != ev.Outcome:
		return "column outcome differs from the recorded event"
	case str(row.agentKind) != ev.Agent.Kind:
		return "column agent_kind differs from the recorded event"
	case str(row.agentWho) != ev.Agent.Who:
		return "column agent_who differs from the recorded event"
	case str(row.agentRole) != ev.Agent.Role:
		return "column agent_role differs from the recorded event"
	case str(row.source) != ev.Source:
		return "column source differs from the recorded event"
	case str(row.requestID) != ev.RequestID:
		return "column request_id differs from the recorded event"
	case !slices.Equal(row.entities, ev.Entities):
		return "column entities differs from the recorded event"
	case !slices.Equal(row.patients, ev.Patients):
		return "column patients differs from the recorded event"
	}
	return ""
}

// Prune deletes the sealed events recorded before before, for retention, and returns how many.
// It deletes only a prefix of the chain (it stops at the first row recorded later, even if
// older ones follow it), and records the last deleted row's sequence number and hash as the
// chain's new anchor, so what remains still verifies. Unsealed rows wait for a seal.
func Prune(ctx context.Context, db DBTX, before time.Time) (int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pruning audit events: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, lockChain); err != nil {
		return 0, fmt.Errorf("pruning audit events: locking: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('cartreg.audit_prune', 'on', true)`); err != nil {
		return 0, fmt.Errorf("pruning audit events: %w", err)
	}
	var cut *int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(
			(SELECT min(chain_seq) - 1 FROM audit_event WHERE chain_seq IS NOT NULL AND recorded >= $1),
			(SELECT max(chain_seq) FROM audit_event))`, before).Scan(&cut); err != nil {
		return 0, fmt.Errorf("pruning audit events: finding the cut: %w", err)
	}
	if cut == nil {
		return 0, nil
	}
	var hash []byte
	err = tx.QueryRow(ctx, `SELECT chain_hash FROM audit_event WHERE chain_seq = $1`, *cut).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil // already pruned up to there (or earlier rows were lost: Verify says so)
	}
	if err != nil {
		return 0, fmt.Errorf("pruning audit events: %w", err)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM audit_event WHERE chain_seq <= $1`, *cut)
	if err != nil {
		return 0, fmt.Errorf("pruning audit events: %w", err)
	}
	n := int(tag.RowsAffected())
	if _, err := tx.Exec(ctx, `INSERT INTO audit_anchor (chain_seq, chain_hash, pruned_at, before, pruned)
		VALUES ($1, $2, statement_timestamp(), $3, $4)`, *cut, hash, before, n); err != nil {
		return 0, fmt.Errorf("pruning audit events: recording the anchor: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pruning audit events: committing: %w", err)
	}
	return n, nil
}

// PruneExpired prunes the events older than the configured retention.
func (r *Recorder) PruneExpired(ctx context.Context) (int, error) {
	return Prune(ctx, r.db, r.now().Add(-r.cfg.Retention))
}

// SealJob is Seal as a periodic job for package schedules (spec such as "* * * * *").
func (r *Recorder) SealJob(spec string) schedules.Job {
	return schedules.Job{Name: "audit-seal", Spec: spec, Run: func(ctx context.Context, _ time.Time) error {
		n, err := r.Seal(ctx)
		if n > 0 {
			r.logger.Debug("audit events sealed", "count", n)
		}
		return err
	}}
}

// PruneJob is PruneExpired as a periodic job for package schedules (spec such as "@daily").
func (r *Recorder) PruneJob(spec string) schedules.Job {
	return schedules.Job{Name: "audit-prune", Spec: spec, Run: func(ctx context.Context, _ time.Time) error {
		n, err := r.PruneExpired(ctx)
		if n > 0 {
			r.logger.Info("audit events past retention deleted", "count", n)
		}
		return err
	}}
}
