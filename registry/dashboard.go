package registry

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/labstack/echo/v4"
)

// dashboardSQL reads every selected course once with what both the response report and the
// survival report need of it: survivalSQL's columns (dates as days since dayZero) and
// responseSQL's end of follow-up and counted assessments.
const dashboardSQL = `, ` + endedCTE + `
SELECT ` + survivalColumns + `,
	e.ended_on - DATE '2000-01-01', e.reason, c.timepoints_text
FROM course c LEFT JOIN ended e ON e.patient_id = c.patient_id AND e.ended_on >= c.infused_on`

// DashboardFor is the response report and the survival report the outcome dashboard shows for
// the request c: the parameters of GET /registry/outcomes/survival (the response report
// takes the same but endpoint), checked as the endpoints check them, and both reports' cohorts
// passed through the overlap control. Both are computed from one pass over the courses
// unless both are kept (the report cache), and each is kept as its endpoint would keep it,
// so that the API and the dashboard's charts are then served from the cache.
func (r *Registry) DashboardFor(c echo.Context) (*ResponseReport, *SurvivalReport, error) {
	f, groupBy, endpoint, err := r.survivalQuery(c)
	if err != nil {
		return nil, nil, err
	}
	ctx := c.Request().Context()
	response, responseCohorts, survival, survivalCohorts, err := r.dashboard(ctx, f, groupBy, endpoint, r.now())
	if err != nil {
		return nil, nil, err
	}
	if err := r.checkOverlap(ctx, append(responseCohorts, survivalCohorts...)); err != nil {
		return nil, nil, err
	}
	return response, survival, nil
}

// dashboard is the response report as of asOf and the survival report for endpoint, of the
// same selection and grouping, each with the cohorts of its published groups.
func (r *Registry) dashboard(ctx context.Context, f Filter, groupBy, endpoint string, asOf time.Time) (
	*ResponseReport, []cohort, *SurvivalReport, []cohort, error) {
	with, err := courses(groupBy, f)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	asOfDay := r.day(asOf)
	today := int32(asOfDay.Sub(dayZero).Hours() / 24)
	responseKey, survivalKey := reportKey("response", f, groupBy, date(asOfDay)), reportKey("survival", f, groupBy, endpoint)
	// The survival tally keeps the patients of each group; the response report's groups are
	// the same patients, so its tally does not keep them again.
	responses, survivals := r.newResponseTally(false), newSurvivalTally(endpoint)
	var version int64
	var keptResponse, keptSurvival *cachedReport
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if version, keptResponse, err = r.reports.lookup(ctx, tx, responseKey, true); err != nil {
			return err
		}
		if _, keptSurvival, err = r.reports.lookup(ctx, tx, survivalKey, true); err != nil {
			return err
		}
		if keptResponse != nil && keptSurvival != nil {
			return nil
		}
		rows, err := tx.Query(ctx, with+dashboardSQL, f.args()...)
		if err != nil {
			return err
		}
		defer rows.Close()
		// The row's values are decoded here, the numbers from PostgreSQL's binary forms (text
		// is its bytes in either form), rather than through pgx's scan plans: a fifth of the
		// dashboard's time in Go went to Scan for 100,000 rows of twelve columns.
		for i, fd := range rows.FieldDescriptions() {
			if fd.DataTypeOID != pgtype.TextOID && fd.Format != pgx.BinaryFormatCode {
				return fmt.Errorf("column %d (%s) came as text, not binary", i, fd.Name)
			}
		}
		var c courseDates
		var cells courseDateCells
		for rows.Next() {
			v := rows.RawValues()
			if len(v) != 12 {
				return fmt.Errorf("dashboard query: %d columns, want 12", len(v))
			}
			g, patient := v[0], int64(binary.BigEndian.Uint64(v[1]))
			cells.infused = int4(v[2])
			for i := range cells.dates {
				cells.dates[i] = int4(v[3+i])
			}
			cells.into(&c)
			survivals.add(g, patient, &c)
			if err := responses.add(g, patient, cells.standing(today, int4(v[9]), v[10]), v[11]); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("dashboard query: %w", err)
	}
	var response *ResponseReport
	var survival *SurvivalReport
	var responseCohorts, survivalCohorts []cohort
	if keptSurvival != nil {
		survival, survivalCohorts = keptSurvival.report.(*SurvivalReport), keptSurvival.cohorts
	} else {
		survival, survivalCohorts = r.survivalReport(survivals, groupBy)
		r.reports.add(survivalKey, version, survival, survivalCohorts, true)
	}
	if keptResponse != nil {
		response, responseCohorts = keptResponse.report.(*ResponseReport), keptResponse.cohorts
	} else {
		// Both reports publish a group exactly when it has MinCell patients or more.
		response, _ = r.responseReport(responses, asOfDay, groupBy)
		if keptSurvival == nil {
			responseCohorts = survivalCohorts
		} else {
			responseCohorts = r.publishedCohorts(survivals)
		}
		r.reports.add(responseKey, version, response, responseCohorts, true)
	}
	return response, responseCohorts, survival, survivalCohorts, nil
}

// publishedCohorts is the cohorts of the groups of t that a report publishes (MinCell
// patients or more), sorted.
func (r *Registry) publishedCohorts(t *survivalTally) []cohort {
	var out []cohort
	for _, data := range t.groups {
		if r.cfg.MinCell <= 1 || len(data.members) >= r.cfg.MinCell {
			out = append(out, data.members.sorted())
		}
	}
	return out
}

// int4 is a nullable int4 column's value in PostgreSQL's binary form (NULL: nil).
func int4(v []byte) pgtype.Int4 {
	if v == nil {
		return pgtype.Int4{}
	}
	return pgtype.Int4{Int32: int32(binary.BigEndian.Uint32(v)), Valid: true}
}

// standing is the course's standingDays as of the day numbered today, from its cells and
// the day number its follow-up ended (with the reason), if it did.
func (d *courseDateCells) standing(today int32, ended pgtype.Int4, reason []byte) standingDays {
	infused := d.infused.Int32
	since := func(day pgtype.Int4) pgtype.Int4 {
		if !day.Valid {
			return day
		}
		return pgtype.Int4{Int32: day.Int32 - infused, Valid: true}
	}
	s := standingDays{toNow: today - infused, toDeath: since(d.dates[0]), toProgression: since(d.dates[2]), toEnd: since(ended)}
	if ended.Valid {
		s.ended = endedAs(string(reason))
	}
	return s
}
