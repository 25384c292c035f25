package registry

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/csvx"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/httpx"
)

// Register adds the researchers' outcome endpoints under /registry. They return aggregates
// only: counts, rates and curves, never a patient, an id or a date of one person.
func (r *Registry) Register(e *echo.Echo) {
	g := e.Group("/registry")
	g.GET("/plan", r.getPlan)
	g.GET("/outcomes/response", r.getResponse)
	g.GET("/outcomes/response.svg", r.getResponseSVG)
	g.GET("/outcomes/survival", r.getSurvival)
	g.GET("/outcomes/survival.svg", r.getSurvivalSVG)
	g.GET("/outcomes/toxicity", r.getToxicity)
	g.GET("/outcomes/incidence", r.getIncidence)
	g.GET("/outcomes/incidence.svg", r.getIncidenceSVG)
	g.GET("/outcomes/best-response", r.getBestResponse)
	g.GET("/outcomes/best-response.svg", r.getBestResponseSVG)
	g.GET("/outcomes/toxicity.svg", r.getToxicitySVG)
	g.GET("/export/analysis", r.getAnalysis)
	g.GET("/export/analysis/dictionary", r.getAnalysisDictionary)
}

func (r *Registry) getAnalysisDictionary(c echo.Context) error {
	if err := checkParams(c.QueryParams()); err != nil {
		return err
	}
	return writeJSON(c, map[string]any{"columns": AnalysisColumns(r.cfg.Plan),
		"de_identification": "HIPAA Safe Harbor (45 CFR 164.514(b)(2)): no names, identifiers, addresses or dates other than " +
			"the year of infusion; days are counted from the infusion; ages are bands whose top is 75+; patients and sites are " +
			"pseudonyms keyed anew for every export. See README, \"The analysis file\"."})
}

// getAnalysis serves the de-identified analysis file, as CSV or (_format=ndjson) one JSON
// object a line, once the setting allows it; every export is recorded in the manifest.
func (r *Registry) getAnalysis(c echo.Context) error {
	if !r.cfg.AnalysisExport {
		return fhir.NewOutcome(http.StatusForbidden, fhir.Security, "the row-level analysis file is off on this server "+
			"(CARTREG_ANALYSIS_EXPORT=false): releasing it is the data custodian's decision; the aggregates under /registry/outcomes are open")
	}
	f, groupBy, err := r.query(c)
	if err != nil {
		return err
	}
	if groupBy != "" {
		return badRequest(fmt.Errorf("group_by=%s: the analysis file has a row per course; group it in your analysis", groupBy), "group_by")
	}
	format := c.QueryParam("_format")
	if format != "" && format != "csv" && format != "ndjson" {
		return badRequest(fmt.Errorf("_format=%s: want csv or ndjson", format), "_format")
	}
	ctx := c.Request().Context()
	columns := AnalysisColumns(r.cfg.Plan)
	names := make([]string, len(columns))
	for i, col := range columns {
		names[i] = col.Name
	}
	if format == "" {
		format = "csv"
	}
	// Recorded before a row leaves, on its own connection and before the export's read
	// transaction takes another (two at once could starve the pool); its count is set once
	// the rows are written, and the record dropped if none was.
	var manifest int64
	if err := r.db.QueryRow(ctx, `INSERT INTO registry_analysis_export (principal, exported_at, query, format, rows, columns)
		VALUES ($1, $2, $3, $4, 0, $5) RETURNING id`, principalKey(ctx), r.now(), c.QueryString(), format, names).Scan(&manifest); err != nil {
		return fmt.Errorf("recording the analysis export: %w", err)
	}
	w := &analysisWriter{c: c, format: format, names: names}
	n, err := r.Analysis(ctx, f, r.now(), w.row)
	if err == nil {
		err = w.finish()
	}
	// The count is what was written, whether or not the client read it all.
	record := context.WithoutCancel(ctx)
	if !c.Response().Committed {
		if _, derr := r.db.Exec(record, `DELETE FROM registry_analysis_export WHERE id = $1`, manifest); derr != nil {
			r.logger.Error("dropping the record of an analysis export that failed", "error", derr)
		}
		return err
	}
	if _, uerr := r.db.Exec(record, `UPDATE registry_analysis_export SET rows = $2 WHERE id = $1`, manifest, n); uerr != nil && err == nil {
		err = fmt.Errorf("recording the analysis export: %w", uerr)
	}
	if err != nil && ctx.Err() == nil {
		// Part of the file is sent and a status can no longer say it failed: the connection
		// is cut, so the client sees an incomplete download rather than a shorter file.
		r.logger.Error("analysis file failed while it was written", "error", err, "rows", n)
		panic(http.ErrAbortHandler)
	}
	return err
}

// analysisWriter writes the analysis file's rows as they come, CSV (a header line first) or
// NDJSON, starting the response at the first row so that a failure before it is still an
// OperationOutcome.
type analysisWriter struct {
	c      echo.Context
	format string
	names  []string
	out    *bufio.Writer
	csv    *csvx.Writer
	enc    *json.Encoder
	obj    map[string]string
}

func (w *analysisWriter) start() error {
	h := w.c.Response().Header()
	if w.format == "ndjson" {
		h.Set(echo.HeaderContentType, "application/x-ndjson")
		h.Set(echo.HeaderContentDisposition, `attachment; filename="analysis.ndjson"`)
	} else {
		h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
		h.Set(echo.HeaderContentDisposition, `attachment; filename="analysis.csv"`)
	}
	w.c.Response().WriteHeader(http.StatusOK)
	w.out = bufio.NewWriterSize(w.c.Response(), 32<<10)
	if w.format == "ndjson" {
		w.enc = json.NewEncoder(w.out)
		w.obj = make(map[string]string, len(w.names))
		return nil
	}
	w.csv = csvx.NewWriter(w.out)
	return w.csv.Write(w.names)
}

func (w *analysisWriter) row(row []string) error {
	if w.out == nil {
		if err := w.start(); err != nil {
			return err
		}
	}
	if w.enc != nil {
		for i, v := range row {
			w.obj[w.names[i]] = v
		}
		return w.enc.Encode(w.obj)
	}
	return w.csv.Write(row)
}

// finish writes what is buffered: with no row, the header line alone (or nothing, for
// NDJSON).
func (w *analysisWriter) finish() error {
	if w.out == nil {
		if err := w.start(); err != nil {
			return err
		}
	}
	if w.csv != nil {
		w.csv.Flush()
		if err := w.csv.Error(); err != nil {
			return err
		}
	}
	return w.out.Flush()
}

func badRequest(err error, param string) error {
	return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, err.Error(), param)
}

// listParams are the filters that take several values (repeated or comma-separated); every
// other parameter of an outcome endpoint takes one.
var listParams = map[string]bool{"disease": true, "product": true, "target": true, "site": true}

// commonParams are the parameters every outcome endpoint takes.
var commonParams = []string{"disease", "product", "target", "site", "infused_from", "infused_to", "group_by", "_format", "_pretty"}

// checkParams refuses a parameter the endpoint does not take, and a single-valued one given
// twice: ignoring either would answer for the whole cohort, or for one of two values,
// without saying so.
func checkParams(q url.Values, extra ...string) error {
	known := map[string]bool{}
	for _, k := range append(append([]string(nil), commonParams...), extra...) {
		known[k] = true
	}
	var unknown []string
	for k := range q {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		all := append(append([]string(nil), commonParams...), extra...)
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf("unknown parameter %s: outcome queries take %s",
			strings.Join(unknown, ", "), strings.Join(all, ", ")), unknown...)
	}
	var repeated []string
	for k, vs := range q {
		if len(vs) > 1 && !listParams[k] {
			repeated = append(repeated, k)
		}
	}
	if len(repeated) > 0 {
		sort.Strings(repeated)
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf("%s given more than once: it takes one value",
			strings.Join(repeated, ", ")), repeated...)
	}
	return nil
}

// query reads the filter and grouping every outcome endpoint takes; extra are the
// endpoint's own parameters.
func (r *Registry) query(c echo.Context, extra ...string) (Filter, string, error) {
	q := c.QueryParams()
	if err := checkParams(q, extra...); err != nil {
		return Filter{}, "", err
	}
	f, err := ParseFilter(q)
	if err != nil {
		var pe *ParamError
		if errors.As(err, &pe) {
			return f, "", badRequest(err, pe.Param)
		}
		return f, "", badRequest(err, "query")
	}
	groupBy := q.Get("group_by")
	if _, ok := groupings[groupBy]; !ok {
		return f, "", badRequest(fmt.Errorf("group_by=%s: want one of disease, product, target, site, age_band, prior_lines", groupBy), "group_by")
	}
	for _, d := range f.Diseases {
		if r.terms.Disease(d) == nil && d != "unclassified" {
			return f, "", badRequest(fmt.Errorf("disease=%s is not a disease-group code (%s)", d, strings.Join(r.diseaseCodes(), ", ")), "disease")
		}
	}
	return f, groupBy, nil
}

func (r *Registry) diseaseCodes() []string {
	var out []string
	for _, d := range r.terms.Diseases {
		out = append(out, d.Code)
	}
	return out
}

// wantsCSV: _format=csv for a browser's address bar, else an Accept header that prefers
// text/csv to JSON.
func wantsCSV(c echo.Context) bool {
	if httpx.Format(c.QueryParam("_format"), map[string]string{"csv": "text/csv"}, "text/csv") != "" {
		return true
	}
	return httpx.Preferred(c.Request().Header.Get(echo.HeaderAccept), echo.MIMEApplicationJSON, "text/csv") == "text/csv"
}

func writeJSON(c echo.Context, v any) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	c.Response().WriteHeader(http.StatusOK)
	enc := json.NewEncoder(c.Response())
	if fhir.Pretty(c) {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

func writeCSV(c echo.Context, name string, rows [][]string) error {
	c.Response().Header().Set(echo.HeaderContentType, "text/csv; charset=utf-8")
	c.Response().Header().Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`.csv"`)
	c.Response().WriteHeader(http.StatusOK)
	return csvx.NewWriter(c.Response()).WriteAll(rows)
}

func (r *Registry) getPlan(c echo.Context) error { return writeJSON(c, r.cfg.Plan) }

func (r *Registry) getResponse(c echo.Context) error {
	f, groupBy, err := r.query(c)
	if err != nil {
		return err
	}
	report, err := r.answerResponse(c, f, groupBy)
	if err != nil {
		return err
	}
	if wantsCSV(c) {
		return writeCSV(c, "response", report.CSV())
	}
	return writeJSON(c, report)
}

func (r *Registry) getToxicity(c echo.Context) error {
	f, groupBy, err := r.query(c)
	if err != nil {
		return err
	}
	report, err := r.answerToxicity(c, f, groupBy)
	if err != nil {
		return err
	}
	if wantsCSV(c) {
		return writeCSV(c, "toxicity", report.CSV())
	}
	return writeJSON(c, report)
}

func (r *Registry) getBestResponse(c echo.Context) error {
	f, groupBy, err := r.query(c)
	if err != nil {
		return err
	}
	report, err := r.answerBestResponse(c, f, groupBy)
	if err != nil {
		return err
	}
	if wantsCSV(c) {
		return writeCSV(c, "best-response", report.CSV())
	}
	return writeJSON(c, report)
}

func (r *Registry) getIncidence(c echo.Context) error {
	report, err := r.incidenceFor(c)
	if err != nil {
		return err
	}
	if wantsCSV(c) {
		return writeCSV(c, "incidence-"+report.Event, report.CSV())
	}
	return writeJSON(c, report)
}

func (r *Registry) getSurvival(c echo.Context) error {
	report, err := r.survivalFor(c)
	if err != nil {
		return err
	}
	if wantsCSV(c) {
		return writeCSV(c, "survival-"+report.Endpoint, report.CSV())
	}
	return writeJSON(c, report)
}

func (r *Registry) survivalFor(c echo.Context) (*SurvivalReport, error) {
	f, groupBy, endpoint, err := r.survivalQuery(c)
	if err != nil {
		return nil, err
	}
	report, groups, err := r.survival(c.Request().Context(), f, endpoint, groupBy)
	if err != nil {
		return nil, err
	}
	if err := r.checkOverlap(c.Request().Context(), groups); err != nil {
		return nil, err
	}
	return report, nil
}

// survivalQuery is the survival endpoint's parameters of c: the filter, the grouping and
// the endpoint (os when none), each checked.
func (r *Registry) survivalQuery(c echo.Context) (f Filter, groupBy, endpoint string, err error) {
	if f, groupBy, err = r.query(c, "endpoint"); err != nil {
		return f, "", "", err
	}
	endpoint = c.QueryParam("endpoint")
	if endpoint == "" {
		endpoint = EndpointOS
	}
	if endpoint != EndpointOS && endpoint != EndpointPFS && endpoint != EndpointDOR {
		return f, "", "", badRequest(fmt.Errorf("endpoint=%s: want os, pfs or dor", endpoint), "endpoint")
	}
	return f, groupBy, endpoint, nil
}

// ResponseFor is the report GET /registry/outcomes/response answers the request c with,
// its parameters checked and its cohorts passed through the overlap control as the endpoint's
// are: for a caller in this process that shows the report (the web pages) rather than sends
// it, which then neither writes nor reads it as JSON.
func (r *Registry) ResponseFor(c echo.Context) (*ResponseReport, error) {
	f, groupBy, err := r.query(c)
	if err != nil {
		return nil, err
	}
	return r.answerResponse(c, f, groupBy)
}

// SurvivalFor is ResponseFor's counterpart for GET /registry/outcomes/survival.
func (r *Registry) SurvivalFor(c echo.Context) (*SurvivalReport, error) { return r.survivalFor(c) }

// answerResponse is the response report for the request, once its cohorts pass the overlap
// control.
func (r *Registry) answerResponse(c echo.Context, f Filter, groupBy string) (*ResponseReport, error) {
	ctx := c.Request().Context()
	report, groups, err := r.response(ctx, f, groupBy, r.now(), r.overlapControl())
	if err != nil {
		return nil, err
	}
	if err := r.checkOverlap(ctx, groups); err != nil {
		return nil, err
	}
	return report, nil
}

// answerToxicity, answerBestResponse and incidenceFor are those reports for the request,
// once their cohorts pass the overlap control, as answerResponse is.
func (r *Registry) answerToxicity(c echo.Context, f Filter, groupBy string) (*ToxicityReport, error) {
	report, groups, err := r.toxicity(c.Request().Context(), f, groupBy)
	if err != nil {
		return nil, err
	}
	return report, r.checkOverlap(c.Request().Context(), groups)
}

func (r *Registry) answerBestResponse(c echo.Context, f Filter, groupBy string) (*BestResponseReport, error) {
	report, groups, err := r.bestResponse(c.Request().Context(), f, groupBy)
	if err != nil {
		return nil, err
	}
	return report, r.checkOverlap(c.Request().Context(), groups)
}

func (r *Registry) incidenceFor(c echo.Context) (*IncidenceReport, error) {
	f, groupBy, err := r.query(c, "event")
	if err != nil {
		return nil, err
	}
	event := c.QueryParam("event")
	if event == "" {
		event = IncidenceRelapse
	}
	if _, ok := incidenceEvents[event]; !ok {
		return nil, badRequest(fmt.Errorf("event=%s: want relapse, %s, %s, %s or %s", event,
			KindSubsequentMalignancy, KindTCellMalignancy, KindInfection, KindProlongedCytopenia), "event")
	}
	report, groups, err := r.incidence(c.Request().Context(), f, event, groupBy)
	if err != nil {
		return nil, err
	}
	return report, r.checkOverlap(c.Request().Context(), groups)
}

// cell renders a count or estimate for CSV: NA when suppressed or not estimable, as R and
// pandas read it.
func cell[T int | float64](v *T) string {
	if v == nil {
		return "NA"
	}
	switch x := any(*v).(type) {
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'g', 10, 64)
	}
	return "NA"
}

// CSV is the report as one row per group and timepoint, a column per response category.
func (rep *ResponseReport) CSV() [][]string {
	var codes []string
	seen := map[string]bool{}
	for _, g := range rep.Groups {
		for _, tp := range g.Timepoints {
			for _, cat := range tp.Categories {
				if !seen[cat.Code] {
					seen[cat.Code] = true
					codes = append(codes, cat.Code)
				}
			}
		}
	}
	header := []string{"group", "n", "milestone", "label", "target_day", "window_start", "window_end", "not_yet_due",
		"dead_before", "due", "assessed", "progressed_before", "pending", "missing", "lost_to_follow_up", "withdrawn",
		"cr", "cr_rate", "cr_lower", "cr_upper", "orr", "orr_rate", "orr_lower", "orr_upper",
		"evaluable", "cr_itt_rate", "cr_itt_lower", "cr_itt_upper", "orr_itt_rate", "orr_itt_lower", "orr_itt_upper"}
	for _, code := range codes {
		header = append(header, "n_"+code)
	}
	rows := [][]string{header}
	for _, g := range rep.Groups {
		for _, tp := range g.Timepoints {
			row := []string{g.Group, cell(g.N), tp.Milestone, tp.Label, strconv.Itoa(tp.TargetDay), strconv.Itoa(tp.Window[0]),
				strconv.Itoa(tp.Window[1]), cell(tp.NotYetDue), cell(tp.DeadBefore), cell(tp.Due), cell(tp.Assessed),
				cell(tp.ProgressedBefore), cell(tp.Pending), cell(tp.Missing), cell(tp.LostToFollowUp), cell(tp.Withdrawn)}
			for _, p := range []Proportion{tp.CompleteResponse, tp.OverallResponse} {
				row = append(row, cell(p.Count), cell(p.Rate), cell(p.Lower), cell(p.Upper))
			}
			row = append(row, cell(tp.OverallResponseITT.Of))
			for _, p := range []Proportion{tp.CompleteResponseITT, tp.OverallResponseITT} {
				row = append(row, cell(p.Rate), cell(p.Lower), cell(p.Upper))
			}
			rows = append(rows, append(row, categoryCells(tp.Categories, codes)...))
		}
	}
	return rows
}

// categoryCells are a row's counts of the response categories codes, in that order: NA where
// suppressed, empty where the category's scheme is not the row's.
func categoryCells(cats []CategoryCount, codes []string) []string {
	byCode := map[string]*int{}
	present := map[string]bool{}
	for _, cat := range cats {
		byCode[cat.Code], present[cat.Code] = cat.Count, true
	}
	out := make([]string, len(codes))
	for i, code := range codes {
		if present[code] {
			out[i] = cell(byCode[code])
		}
	}
	return out
}

// CSV is the report as one row per curve step, with each group's summary repeated.
func (rep *SurvivalReport) CSV() [][]string {
	rows := [][]string{{"endpoint", "group", "n", "events", "median_days", "median_lower", "median_upper",
		"median_follow_up_days", "t_days", "at_risk", "events_at_t", "censored_at_t", "survival", "lower", "upper"}}
	for _, g := range rep.Groups {
		summary := []string{rep.Endpoint, g.Group, cell(g.N), cell(g.Events), cell(g.MedianDays), cell(g.MedianCI[0]),
			cell(g.MedianCI[1]), cell(g.MedianFollowUpDays)}
		if len(g.Curve) == 0 {
			rows = append(rows, append(summary, "", "", "", "", "", "", ""))
		}
		for _, p := range g.Curve {
			s := p.Survival
			rows = append(rows, append(append([]string(nil), summary...), strconv.FormatFloat(p.TDays, 'g', -1, 64),
				strconv.Itoa(p.AtRisk), strconv.Itoa(p.Events), strconv.Itoa(p.Censored), cell(&s), cell(p.Lower), cell(p.Upper)))
		}
	}
	return rows
}
