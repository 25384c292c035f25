package followup

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
)

// Change is one Task write a run would make.
type Change struct {
	Kind      string // ChangeCreate, ChangeUpdate, ChangeComplete or ChangeCancel
	TaskID    string // "" for a Task not made yet
	Patient   string // "Patient/<id>"
	Infusion  string // "Procedure/<id>"
	Milestone string
	// From and To are the Task's status and business status ("requested/due"), From as the
	// scheduler last wrote it, or as a coordinator did; From is "" for a new Task.
	From, To   string
	Owner      string
	WindowOpen string
	WindowEnd  string
}

// Kinds of Change.
const (
	ChangeCreate   = "create"
	ChangeUpdate   = "update"
	ChangeComplete = "complete"
	ChangeCancel   = "cancel"
)

// DigestPreview is the digest an owner would be sent after a run: the Tasks they have not
// been told of, as of before the run (Pending) and those the run would add.
type DigestPreview struct {
	Owner        string
	Pending      int // notices left by earlier runs and not yet sent
	New, Overdue int // the run's own notices: new Tasks, Tasks newly overdue
}

// Preview is what a run would do.
type Preview struct {
	Summary Summary
	Digests []DigestPreview // by owner
}

// Preview works out what Run would do as of at, and what digests would follow, without
// writing: it only reads, through tx, which the caller should open read-only so that the
// database itself guarantees it. each is called with every Change, in infusion order, as it
// is found; the Preview holds only the counts, so a first run over a large registry (hundreds
// of thousands of new Tasks) is shown without holding them all.
//
// It decides as Run does, chunk by chunk, on one snapshot. Unlike Run it does not lock the
// Tasks it would update, so a coordinator's write made meanwhile would leave that Task to them
// in the real run.
func (s *Tracker) Preview(ctx context.Context, tx pgx.Tx, at time.Time, each func(Change)) (*Preview, error) {
	p := &Preview{}
	if err := planChunk(ctx, tx); err != nil {
		return nil, err
	}
	digests := map[string]*DigestPreview{}
	digestOf := func(owner string) *DigestPreview {
		d, ok := digests[owner]
		if !ok {
			d = &DigestPreview{Owner: owner}
			digests[owner] = d
		}
		return d
	}
	rows, err := tx.Query(ctx, `SELECT owner, count(*) FROM followup_notice WHERE digest_key IS NULL GROUP BY owner`)
	if err != nil {
		return nil, fmt.Errorf("follow-up preview: %w", err)
	}
	for rows.Next() {
		var owner string
		var n int
		if err := rows.Scan(&owner, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("follow-up preview: %w", err)
		}
		digestOf(owner).Pending = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("follow-up preview: %w", err)
	}

	today := s.day(at)
	after := [2]string{"", ""}
	for {
		last, n, err := s.lastOfChunk(ctx, tx, after)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		visits, err := s.visits(ctx, tx, today, true, byChunk, after[0], after[1], s.chunk)
		if err != nil {
			return nil, err
		}
		creates, updates, takeovers := s.decide(today, visits, true, &p.Summary)
		told, err := s.toldOverdue(ctx, tx, updates)
		if err != nil {
			return nil, err
		}
		for _, w := range creates {
			p.Summary.Created++
			p.Summary.count(w.v.status)
			c := s.change(w, ChangeCreate, "")
			if c.Owner != "" && w.v.status == StatusRequested {
				if w.v.business == Overdue {
					digestOf(c.Owner).Overdue++
				} else {
					digestOf(c.Owner).New++
				}
			}
			each(c)
		}
		for _, w := range updates {
			p.Summary.Updated++
			p.Summary.count(w.v.status)
			c := s.change(w, kindOf(w.v.status), w.v.task.status+"/"+w.v.task.businessStatus)
			if w.v.business == Overdue && w.v.task.businessStatus != Overdue && c.Owner != "" && !told[w.v.task.id] {
				digestOf(c.Owner).Overdue++
			}
			each(c)
		}
		for _, w := range takeovers {
			p.Summary.Updated++
			p.Summary.count(w.v.status)
			each(s.change(w, kindOf(w.v.status), w.v.task.currentStatus+" (a coordinator's version)"))
		}
		if n < s.chunk {
			break
		}
		after = last
	}
	for _, d := range digests {
		p.Digests = append(p.Digests, *d)
	}
	slices.SortFunc(p.Digests, func(a, b DigestPreview) int { return cmp.Compare(a.Owner, b.Owner) })
	return p, nil
}

// toldOverdue says which of the Tasks about to be updated their owners have been told are
// overdue already: a notice is given once.
func (s *Tracker) toldOverdue(ctx context.Context, tx pgx.Tx, updates []write) (map[string]bool, error) {
	told := map[string]bool{}
	var ids []string
	for _, w := range updates {
		if w.v.business == Overdue && w.v.task.businessStatus != Overdue {
			ids = append(ids, w.v.task.id)
		}
	}
	if len(ids) == 0 {
		return told, nil
	}
	rows, err := tx.Query(ctx, `SELECT task_id FROM followup_notice WHERE reason = 'overdue' AND task_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("follow-up preview: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("follow-up preview: %w", err)
	}
	for _, id := range found {
		told[id] = true
	}
	return told, nil
}

func kindOf(status string) string {
	switch status {
	case StatusCompleted:
		return ChangeComplete
	case StatusCancelled:
		return ChangeCancel
	}
	return ChangeUpdate
}

func (s *Tracker) change(w write, kind, from string) Change {
	v := w.v
	c := Change{Kind: kind, Patient: "Patient/" + v.patient, Infusion: v.infusionType + "/" + v.infusionID,
		Milestone: v.milestone.Code, From: from, To: v.status, Owner: s.ownerOf(v.site),
		WindowOpen: day(v.opens), WindowEnd: day(v.closes)}
	if v.business != "" {
		c.To += "/" + v.business
	}
	if v.task != nil {
		c.TaskID = v.task.id
	}
	return c
}

// Tally counts the follow-up Tasks by their current versions, as of at: a coordinator's
// change (a Task put on hold, failed, handed on) counts as they wrote it, and overdue is
// worked out from each open Task's window, as the work list does.
type Tally struct {
	Tasks, Open, Due, Overdue, Upcoming int
}

// Tally counts the Tasks over db as of at.
func (s *Tracker) Tally(ctx context.Context, db fhir.DBTX, at time.Time) (Tally, error) {
	var t Tally
	if err := db.QueryRow(ctx, `SELECT count(*) FROM followup_task t JOIN `+fhir.CurrentRelation+` r
		ON r.resource_type = 'Task' AND r.resource_id = t.task_id`).Scan(&t.Tasks); err != nil {
		return t, fmt.Errorf("counting follow-up Tasks: %w", err)
	}
	rep, err := s.Worklist(db, func() time.Time { return at }).Count(ctx, Query{Within: maxWithin})
	if err != nil {
		return t, err
	}
	t.Open, t.Due, t.Overdue, t.Upcoming = rep.Total, rep.Counts[UrgencyDue], rep.Counts[UrgencyOverdue], rep.Counts[UrgencyUpcoming]
	return t, nil
}
