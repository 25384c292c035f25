package registry

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry/stats"
)

// Disclosure control of the outcomes, beyond small-cell suppression (suppress.go): every
// count shown is rounded, survival curves drop in steps of at least MinCell events, and a
// query whose cohort differs from one the same principal was answered for recently by 1 to
// MinCell-1 patients is refused. README ("Outcomes for researchers") gives the method and its
// sources.

// rounded is n as researchers see it: to the nearest multiple of RoundTo (halves up), or n
// itself when rounding is off.
func (r *Registry) rounded(n int) int {
	b := r.cfg.RoundTo
	if b <= 1 {
		return n
	}
	return (n + b/2) / b * b
}

func (r *Registry) roundedPtr(n *int) *int {
	if n == nil {
		return nil
	}
	v := r.rounded(*n)
	return &v
}

// publishedCurve is the Kaplan-Meier curve as researchers see it. With suppression on, the
// curve's steps are pooled until each holds at least MinCell events: a published step is the
// estimate at the last event time of its block, with the number at risk at the block's start
// and the events and censorings within it, so no step stands for fewer than MinCell people.
// The estimate at each published time is the exact one; the time of a step is an event time
// of the cohort, but not one a single identifiable patient can be tied to. The curve stops
// where fewer than MinCell remain at risk, and the events of a last block too small to
// publish are not drawn. Counts are rounded.
func (r *Registry) publishedCurve(steps []stats.Step) []CurvePoint {
	out := []CurvePoint{}
	if r.cfg.MinCell <= 1 {
		for _, s := range steps {
			out = append(out, CurvePoint{TDays: s.Time, AtRisk: r.rounded(s.AtRisk), Events: r.rounded(s.Events),
				Censored: r.rounded(s.Censored), Survival: s.Survival, Lower: number(s.Lower), Upper: number(s.Upper)})
		}
		return out
	}
	atRisk, events, censored := 0, 0, 0
	for _, s := range steps {
		if s.AtRisk < r.cfg.MinCell {
			break
		}
		if events == 0 && censored == 0 {
			atRisk = s.AtRisk
		}
		events += s.Events
		censored += s.Censored
		if events >= r.cfg.MinCell {
			out = append(out, CurvePoint{TDays: s.Time, AtRisk: r.rounded(atRisk), Events: r.rounded(events),
				Censored: r.rounded(censored), Survival: s.Survival, Lower: number(s.Lower), Upper: number(s.Upper)})
			events, censored = 0, 0
		}
	}
	return out
}

// cohort is the set of patients one published group was computed from, each as a 64-bit hash
// of the patient id, ascending.
type cohort []int64

// cohortSQL lists each group's patients as hashes, sorted afterwards in Go (cheaper than in
// the aggregate). patientHashSQL is PostgreSQL's 64-bit text hash, the one hash partitioning
// relies on and therefore kept the same across versions; should an upgrade ever change it,
// remembered sets would stop matching for one window, no longer.
const (
	patientHashSQL = `hashtextextended(c.patient_id, 0)`
	cohortSQL      = `
SELECT c.g, array_agg(` + patientHashSQL + `)
FROM course c
GROUP BY c.g`
)

// cohorts reads the patients of every group of the query, in the query's own transaction.
func cohorts(ctx context.Context, tx pgx.Tx, with string, args []any) (map[string]cohort, error) {
	rows, err := tx.Query(ctx, with+cohortSQL, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]cohort{}
	for rows.Next() {
		var g string
		var ids []int64
		if err := rows.Scan(&g, &ids); err != nil {
			return nil, err
		}
		out[g] = cohort(ids).sorted()
	}
	return out, rows.Err()
}

// groupCohorts is cohorts when the overlap control is on, else nothing: the hashes cost a
// pass over the cohort that an unguarded instance need not pay.
func (r *Registry) groupCohorts(ctx context.Context, tx pgx.Tx, with string, args []any) (map[string]cohort, error) {
	if !r.overlapControl() {
		return nil, nil
	}
	return cohorts(ctx, tx, with, args)
}

func (c cohort) sorted() cohort {
	slices.Sort(c)
	return c
}

func (c cohort) digest() []byte {
	h := sha256.New()
	var b [8]byte
	for _, id := range c {
		binary.BigEndian.PutUint64(b[:], uint64(id))
		h.Write(b[:])
	}
	return h.Sum(nil)
}

// differsBy counts the patients in one of a and b but not the other, stopping at limit.
func differsBy(a, b cohort, limit int) int {
	n, i, j := 0, 0, 0
	for (i < len(a) || j < len(b)) && n < limit {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			n, i = n+1, i+1
		case i == len(a) || b[j] < a[i]:
			n, j = n+1, j+1
		default:
			i, j = i+1, j+1
		}
	}
	return n
}

// principalKey names who asked, for the cohort memory: "" when the request has no principal
// (the control then does not apply: every route of the server has one).
func principalKey(ctx context.Context) string {
	p, ok := auth.FromContext(ctx)
	if !ok || p == nil {
		return ""
	}
	return p.Kind + ":" + p.Subject
}

// overlapControl says whether queries' cohorts are checked and remembered.
func (r *Registry) overlapControl() bool { return r.cfg.OverlapWindow > 0 && r.cfg.MinCell > 1 }

// checkOverlap refuses a query one of whose published groups differs from a cohort the same
// principal was answered for within OverlapWindow by 1 to MinCell-1 patients: the difference
// of the two answers would be the outcome of those few patients. Otherwise it remembers the
// query's cohorts. Check and record are one transaction under a lock per principal, so two
// queries sent at once cannot both pass without seeing each other.
//
// A cohort the principal is already remembered for is not compared again, only its time
// moved: it was compared with every cohort remembered when it was first answered, and every
// cohort remembered since was compared with it, under the same lock, so the comparison could
// only repeat a pass. That is the common case (a dashboard reloaded, its two reports sharing
// one cohort), and it spares reading the earlier cohorts of about the same size, each up to
// 8 bytes a patient.
func (r *Registry) checkOverlap(ctx context.Context, groups []cohort) error {
	who := principalKey(ctx)
	if !r.overlapControl() || who == "" || len(groups) == 0 {
		return nil
	}
	now := r.now()
	minCell := r.cfg.MinCell
	// Each distinct set once: the dashboard's two reports publish the same groups' patients.
	var digests [][]byte
	var sets []cohort
	for _, g := range groups {
		d := g.digest()
		if !slices.ContainsFunc(digests, func(e []byte) bool { return string(e) == string(d) }) {
			digests, sets = append(digests, d), append(sets, g)
		}
	}
	var refused error
	err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('registry_query_cohort ' || $1, 0))`, who); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM registry_query_cohort WHERE asked_at < $1`, now.Add(-r.cfg.OverlapWindow)); err != nil {
			return err
		}
		// The sets asked before only have their time moved, all at once, and are not sent again.
		rows, err := tx.Query(ctx, `UPDATE registry_query_cohort SET asked_at = $3 WHERE principal = $1 AND digest = ANY($2::bytea[])
			RETURNING digest`, who, digests, now)
		if err != nil {
			return err
		}
		known, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
			var d []byte
			return string(d), row.Scan(&d)
		})
		if err != nil {
			return err
		}
		var fresh pgx.Batch
		for i, g := range sets {
			if slices.Contains(known, string(digests[i])) {
				continue
			}
			rows, err := tx.Query(ctx, `SELECT patients FROM registry_query_cohort
				WHERE principal = $1 AND size BETWEEN $2 AND $3 AND digest <> $4`, who, len(g)-minCell+1, len(g)+minCell-1, digests[i])
			if err != nil {
				return err
			}
			for rows.Next() {
				var earlier cohort
				if err := rows.Scan(&earlier); err != nil {
					rows.Close()
					return err
				}
				if d := differsBy(g, earlier, minCell); d > 0 && d < minCell {
					refused = fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.BusinessRule, fmt.Sprintf(
						"this query's patients differ from those of a query you made in the last %s by fewer than %d "+
							"(CARTREG_OUTCOMES_MIN_CELL), so the difference of the two answers would describe those few patients; "+
							"widen the selection, or ask again after CARTREG_OUTCOMES_OVERLAP_WINDOW (%s) has passed",
						r.cfg.OverlapWindow, minCell, r.cfg.OverlapWindow), "query")
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if refused != nil {
				return errRefused // nothing recorded, not even the times moved: nothing was answered
			}
			fresh.Queue(`INSERT INTO registry_query_cohort (principal, digest, size, patients, asked_at)
				VALUES ($1, $2, $3, $4, $5)`, who, digests[i], len(g), []int64(g), now)
		}
		if fresh.Len() > 0 {
			return tx.SendBatch(ctx, &fresh).Close()
		}
		return nil
	})
	if errors.Is(err, errRefused) {
		return refused
	}
	if err != nil {
		return fmt.Errorf("outcome query cohorts: %w", err)
	}
	return refused
}

// errRefused rolls back a checkOverlap that refuses the query.
var errRefused = errors.New("refused by the overlap control")

func itoa(n int) string {
	return strconv.Itoa(n)
}
