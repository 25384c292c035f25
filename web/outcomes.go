package web

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry"
)

// outcomeParams are the registry's filters the dashboard passes through, and nothing else.
var outcomeParams = []string{"disease", "product", "target", "site", "infused_from", "infused_to", "group_by", "endpoint"}

// outcomeQuery is the dashboard's query string, reduced to the registry's parameters.
func outcomeQuery(c echo.Context) url.Values {
	v := url.Values{}
	for _, k := range outcomeParams {
		if s := strings.TrimSpace(c.QueryParam(k)); s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// fromRegistry runs the registry's own endpoint for path and query, in process: the same
// validation, small-cell suppression and charts as the API, with no second copy of them here.
// The page's route has already been judged by the access policy (researchers and
// administrators), which is the rule of the registry's routes too.
func (p *Pages) fromRegistry(c echo.Context, path string, q url.Values) (*httptest.ResponseRecorder, error) {
	req := c.Request().Clone(c.Request().Context())
	req.URL = &url.URL{Path: path, RawQuery: q.Encode()}
	req.RequestURI = req.URL.RequestURI()
	req.Header.Del(echo.HeaderAccept)
	rec := httptest.NewRecorder()
	ctx := p.e.NewContext(req, rec)
	p.e.Router().Find(http.MethodGet, path, ctx)
	if err := ctx.Handler()(ctx); err != nil {
		return nil, err
	}
	return rec, nil
}

type outcomesPage struct {
	Query     url.Values
	Encoded   template.URL // the whole query
	Response  template.URL // the query without group_by, which the response chart refuses
	Report    *registry.ResponseReport
	Survival  *registry.SurvivalReport
	Hidden    []string // what the small-cell rules hid, in words
	Groupings []string
	MaxStale  time.Duration // how far the figures may lag the data (CARTREG_OUTCOMES_MAX_STALE)
}

func (p *Pages) outcomes(c echo.Context) error {
	q := outcomeQuery(c)
	if e := q.Get("endpoint"); e != "" && !slices.Contains([]string{"os", "pfs", "dor"}, e) {
		return p.errorPage(c, fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, "endpoint="+e+": want os, pfs or dor", "endpoint"))
	}
	data := outcomesPage{Query: q, Encoded: template.URL(q.Encode()), Groupings: []string{"disease", "product", "target", "site"},
		MaxStale: p.d.Registry.MaxStale()}
	// Both reports come from one pass over the courses (Registry.DashboardFor), as the
	// registry's own structs, not as its JSON decoded again.
	rep, surv, err := p.d.Registry.DashboardFor(p.registryContext(c, "/registry/outcomes/survival", q))
	if err != nil {
		return p.errorPage(c, err)
	}
	data.Report, data.Survival = rep, surv
	noGroup := cloneValues(q)
	noGroup.Del("group_by")
	data.Response = template.URL(noGroup.Encode())
	data.Hidden = hidden(rep, surv)
	return p.page(c, http.StatusOK, "outcomes", pageData{Title: "Outcomes", Nav: "outcomes", Data: data})
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// registryContext is the request c as a request of the registry's endpoint path with query
// q, for the registry's report methods (Registry.ResponseFor), which read its parameters and
// its principal.
func (p *Pages) registryContext(c echo.Context, path string, q url.Values) echo.Context {
	req := c.Request().Clone(c.Request().Context())
	req.URL = &url.URL{Path: path, RawQuery: q.Encode()}
	req.RequestURI = req.URL.RequestURI()
	return p.e.NewContext(req, httptest.NewRecorder())
}

// hidden says in words what the small-cell rules left out of the reports.
func hidden(rep *registry.ResponseReport, surv *registry.SurvivalReport) []string {
	var out []string
	nulls := 0
	if rep.MinCell > 1 {
		out = append(out, fmt.Sprintf("Groups of fewer than %d patients are not listed at all, exactly as groups of none are not, so that their absence says nothing.", rep.MinCell))
	}
	if rep.RoundTo > 1 {
		out = append(out, fmt.Sprintf("Counts are rounded to the nearest %d, and rates are worked out from the rounded counts.", rep.RoundTo))
	}
	for _, g := range rep.Groups {
		for _, t := range g.Timepoints {
			for _, n := range []*int{t.NotYetDue, t.DeadBefore, t.Due, t.Assessed, t.ProgressedBefore, t.Pending, t.Missing} {
				if n == nil {
					nulls++
				}
			}
			for _, cat := range t.Categories {
				if cat.Count == nil {
					nulls++
				}
			}
		}
	}
	if nulls > 0 {
		out = append(out, fmt.Sprintf("Response: %d counts are shown as \"<%d\": fewer than %d patients, or a figure from which such a count could be worked out by subtraction.",
			nulls, rep.MinCell, rep.MinCell))
	}
	for _, g := range surv.Groups {
		if g.Events == nil {
			out = append(out, fmt.Sprintf("Survival: the number of events in group %q is hidden (fewer than %d).", g.Group, surv.MinCell))
		}
	}
	if len(surv.Groups) > 0 && surv.MinCell > 1 {
		out = append(out, fmt.Sprintf("Survival curves step only once at least %d events have gathered, and stop where fewer than %d patients remain at risk; landmarks are read off the curve as drawn.", surv.MinCell, surv.MinCell))
	}
	return out
}

// outcomesExport serves the registry's CSV and charts for the dashboard's filters.
func (p *Pages) outcomesExport(c echo.Context) error {
	q := outcomeQuery(c)
	var path string
	switch c.Path() {
	case "/outcomes/response.csv":
		path = "/registry/outcomes/response"
		q.Del("endpoint")
		q.Set("_format", "csv")
	case "/outcomes/survival.csv":
		path = "/registry/outcomes/survival"
		q.Set("_format", "csv")
	case "/outcomes/response.svg":
		path = "/registry/outcomes/response.svg"
		q.Del("endpoint")
		q.Del("group_by")
	default:
		path = "/registry/outcomes/survival.svg"
	}
	rec, err := p.fromRegistry(c, path, q)
	if err != nil {
		var o *fhir.Outcome
		if errors.As(err, &o) {
			return o // an image or a download: the OperationOutcome says what was wrong
		}
		return err
	}
	h := c.Response().Header()
	for _, k := range []string{echo.HeaderContentType, echo.HeaderContentDisposition} {
		if v := rec.Header().Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if strings.HasSuffix(c.Path(), ".csv") {
		name := strings.TrimPrefix(c.Path(), "/outcomes/")
		h.Set(echo.HeaderContentDisposition, `attachment; filename="outcomes-`+name+`"`)
	}
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(rec.Code)
	_, err = c.Response().Write(rec.Body.Bytes())
	return err
}
