package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/csvx"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

// workFilter is the work list page's query string.
type workFilter struct {
	Site, Milestone, Bucket, Status, Search string
	Within                                  int
	Page                                    int // 1 is the first
}

func readWorkFilter(c echo.Context) (workFilter, error) {
	f := workFilter{Site: c.QueryParam("site"), Milestone: c.QueryParam("milestone"), Bucket: c.QueryParam("bucket"),
		Status: c.QueryParam("status"), Search: strings.TrimSpace(c.QueryParam("q")), Within: followup.WithinLeadTime, Page: 1}
	bad := func(param, format string, args ...any) (workFilter, error) {
		return f, fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf(format, args...), param)
	}
	if f.Site != "" && !fhir.ValidID(f.Site) {
		return bad("site", "site=%s is not an Organization id", f.Site)
	}
	if f.Bucket != "" && !slices.Contains([]string{followup.Overdue, followup.Due, followup.Upcoming}, f.Bucket) {
		return bad("bucket", "bucket=%s: want overdue, due or upcoming", f.Bucket)
	}
	if f.Status != "" && !slices.Contains(followup.OpenStatuses, f.Status) {
		return bad("status", "status=%s: want one of %s", f.Status, strings.Join(followup.OpenStatuses, ", "))
	}
	if w := c.QueryParam("within"); w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 0 || n > 366 {
			return bad("within", "within=%s: want a number of days from 0 to 366", w)
		}
		f.Within = n
	}
	if pg := c.QueryParam("page"); pg != "" {
		n, err := strconv.Atoi(pg)
		if err != nil || n < 1 || n > 1_000_000 {
			return bad("page", "page=%s: want a page number from 1", pg)
		}
		f.Page = n
	}
	return f, nil
}

// encode is the filter as a query string, for links back to the same list.
func (f workFilter) encode() string {
	v := url.Values{}
	for k, s := range map[string]string{"site": f.Site, "milestone": f.Milestone, "bucket": f.Bucket, "status": f.Status, "q": f.Search} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if f.Within != followup.WithinLeadTime {
		v.Set("within", strconv.Itoa(f.Within))
	}
	return v.Encode()
}

// siteOption is a site a person may choose.
type siteOption struct{ ID, Name string }

// sitesOf are the sites the principal may see, with their names.
func (p *Pages) sitesOf(ctx context.Context, pr *auth.Principal) ([]siteOption, error) {
	var rows pgx.Rows
	var err error
	if pr.Role == auth.RoleCoordinator {
		rows, err = p.d.Store.DB().Query(ctx, `SELECT s.id, coalesce(r.name, s.id) FROM unnest($1::text[]) AS s(id)
			LEFT JOIN registry_site r ON r.organization_id = s.id ORDER BY 2`, pr.Sites)
	} else {
		rows, err = p.d.Store.DB().Query(ctx, `SELECT organization_id, name FROM registry_site ORDER BY name`)
	}
	if err != nil {
		return nil, fmt.Errorf("listing sites: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (siteOption, error) {
		var s siteOption
		return s, r.Scan(&s.ID, &s.Name)
	})
}

// workList is the work list the principal may see, filtered; counts are per bucket before the
// bucket filter, so each bucket's link says what it holds. limit and offset page it (limit 0:
// every visit).
func (p *Pages) workList(ctx context.Context, pr *auth.Principal, f workFilter, offset, limit int) (*followup.Report, error) {
	q := followup.Query{Within: f.Within, Search: f.Search, SearchMax: p.cfg.WorkListSearchMax, Urgency: f.Bucket, Offset: offset, Limit: limit}
	if f.Site != "" {
		q.Sites = []string{f.Site}
	}
	if pr.Role == auth.RoleCoordinator {
		// The principal's sites bound the list whatever the filter asks, as the API's does.
		if len(q.Sites) == 0 {
			q.Sites = pr.Sites
		} else if !slices.Contains(pr.Sites, f.Site) {
			q.Sites = []string{""}
		}
		if len(q.Sites) == 0 {
			q.Sites = []string{""}
		}
	}
	if f.Status != "" {
		q.Statuses = []string{f.Status}
	}
	if f.Milestone != "" {
		q.Milestones = []string{f.Milestone}
	}
	return p.worklist.List(ctx, q)
}

type workPage struct {
	Filter workFilter
	Query  template.URL // the filter as a query string, without the page
	Report *followup.Report
	// Shown is the page's slice of Report.Items; First and Last number its rows (from 1),
	// Prev and Next are the neighbouring pages' numbers, 0 when there is none.
	Shown             []followup.Item
	First, Last       int
	Prev, Next, Pages int
	Sites             []siteOption
	Milestones        []registry.Milestone
	Statuses          []string
	Today             string
	HasFeed           bool // the person has a calendar feed link
	// Visits is each shown row's "record visit" form, by Task id.
	Visits map[string]visitForm
	// SearchTooBroad says why a search listed nothing: it would have found too many patients
	// (CARTREG_WORKLIST_SEARCH_MAX).
	SearchTooBroad string
}

func (p *Pages) work(c echo.Context) error {
	ctx := c.Request().Context()
	pr, _ := auth.FromContext(ctx)
	f, err := readWorkFilter(c)
	if err != nil {
		return p.errorPage(c, err)
	}
	size := p.cfg.WorkListPageSize
	rep, err := p.workList(ctx, pr, f, (f.Page-1)*size, size)
	var broad *followup.SearchTooBroadError
	if errors.As(err, &broad) {
		// The filters stay as typed, with nothing listed and the reason where the list was.
		rep, err = &followup.Report{AsOf: p.d.FollowUp.Today(p.d.Clock()), Items: []followup.Item{},
			Counts: map[string]int{followup.UrgencyOverdue: 0, followup.UrgencyDue: 0, followup.UrgencyUpcoming: 0}}, nil
	}
	if err != nil {
		return err
	}
	sites, err := p.sitesOf(ctx, pr)
	if err != nil {
		return err
	}
	wp := workPage{Filter: f, Query: template.URL(f.encode()), Report: rep, Sites: sites, Milestones: p.d.Registry.Plan().Milestones,
		Statuses: followup.OpenStatuses, Today: p.d.FollowUp.Today(p.d.Clock())}
	if broad != nil {
		wp.SearchTooBroad = fmt.Sprintf("More than %d patients have a name or MRN beginning with each word of %q. Type more of the name or MRN.",
			broad.Max, broad.Search)
	}
	if wp.HasFeed, err = p.users.hasFeedToken(ctx, sessionOf(c).user.Name); err != nil {
		return err
	}
	wp.Pages = max(1, (rep.Total+size-1)/size)
	from := min((f.Page-1)*size, rep.Total)
	to := from + len(rep.Items)
	wp.Shown, wp.First, wp.Last = rep.Items, from+1, to
	if wp.Visits, err = p.visitForms(ctx, wp.Shown, wp.Today); err != nil {
		return err
	}
	if f.Page > 1 {
		wp.Prev = min(f.Page-1, wp.Pages)
	}
	if to < rep.Total {
		wp.Next = f.Page + 1
	}
	return p.page(c, http.StatusOK, "work", pageData{Title: "My work list", Nav: "work", Data: wp})
}

// workCSV is the work list as shown, for a spreadsheet: the API's CSV (followup.Report.CSV,
// written by csvx with a UTF-8 byte-order mark), with no ids unless ids=1.
func (p *Pages) workCSV(c echo.Context) error {
	ctx := c.Request().Context()
	pr, _ := auth.FromContext(ctx)
	f, err := readWorkFilter(c)
	if err != nil {
		return p.errorPage(c, err)
	}
	rep, err := p.workList(ctx, pr, f, 0, 0)
	var broad *followup.SearchTooBroadError
	if errors.As(err, &broad) {
		return p.errorPage(c, fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.TooCostly,
			broad.Error()+" (CARTREG_WORKLIST_SEARCH_MAX)", "q"))
	}
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := csvx.NewSpreadsheetWriter(&buf).WriteAll(rep.CSV(c.QueryParam("ids") == "1")); err != nil {
		return fmt.Errorf("writing the work list as CSV: %w", err)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentDisposition, `attachment; filename="work-list-`+rep.AsOf+`.csv"`)
	h.Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, "text/csv; charset=utf-8", buf.Bytes())
}

// followUpTask reads a follow-up Task the principal may change: a coordinator's sites' only
// (any other is "not known", as the API says), and only the scheduler's follow-up Tasks.
func (p *Pages) followUpTask(ctx context.Context, pr *auth.Principal, id string) (*fhir.Version, map[string]any, error) {
	notFound := fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("Task/%s is not known", id))
	if !fhir.ValidID(id) {
		return nil, nil, notFound
	}
	if pr.Role == auth.RoleCoordinator {
		ok, err := p.d.InSites(ctx, "Task", id, pr.Sites)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, notFound
		}
	}
	v, err := p.d.Store.Read(ctx, p.d.Store.DB(), "Task", id)
	if err != nil {
		return nil, nil, err
	}
	var body map[string]any
	if err := json.Unmarshal(v.JSON, &body); err != nil {
		return nil, nil, fmt.Errorf("reading Task/%s: %w", id, err)
	}
	idents, _ := body["identifier"].([]any)
	for _, x := range idents {
		if m, _ := x.(map[string]any); m["system"] == followup.IdentifierSystem {
			return v, body, nil
		}
	}
	return nil, nil, fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("Task/%s is not a follow-up visit", id))
}

// note is an Annotation by the signed-in person, now.
func (p *Pages) note(pr *auth.Principal, text string) map[string]any {
	return map[string]any{"authorString": pr.Name, "time": p.d.Clock().UTC().Format(time.RFC3339), "text": text}
}

func addNote(body map[string]any, note map[string]any) {
	notes, _ := body["note"].([]any)
	body["note"] = append(notes, note)
}

// write validates resources as the API does and writes them in one transaction through the
// store, so the registry, the follow-up hook, Subscriptions and the audit trail all see it.
// A Task is updated only if still at the version the page showed.
func (p *Pages) write(ctx context.Context, creates []map[string]any, update map[string]any, version int) error {
	parse := func(body map[string]any) (*fhir.Resource, error) {
		delete(body, "meta")
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		return fhir.Parse(raw)
	}
	var resources []*fhir.Resource
	for _, b := range creates {
		r, err := parse(b)
		if err != nil {
			return err
		}
		resources = append(resources, r)
	}
	var upd *fhir.Resource
	if update != nil {
		var err error
		if upd, err = parse(update); err != nil {
			return err
		}
	}
	return p.d.Store.InTx(ctx, func(tx pgx.Tx) error {
		for _, r := range resources {
			if _, err := p.d.Store.Create(ctx, tx, r); err != nil {
				return err
			}
		}
		if upd != nil {
			if _, err := p.d.Store.Update(ctx, tx, upd, &version); err != nil {
				return err
			}
		}
		return nil
	})
}

// formTask reads the follow-up Task a row's form acts on (the :id of the route), as the
// signed-in principal may see it, and the version the page showed: the form's, else the
// Task's current one.
func (p *Pages) formTask(c echo.Context) (*auth.Principal, *fhir.Version, map[string]any, int, error) {
	ctx := c.Request().Context()
	pr, _ := auth.FromContext(ctx)
	v, body, err := p.followUpTask(ctx, pr, c.Param("id"))
	if err != nil {
		return nil, nil, nil, 0, err
	}
	version, err := strconv.Atoi(c.FormValue("version"))
	if err != nil {
		version = v.VersionID
	}
	return pr, v, body, version, nil
}

// taskAction runs change on a follow-up Task and writes it, then returns to the list.
func (p *Pages) taskAction(c echo.Context, done string, change func(pr *auth.Principal, body map[string]any) ([]map[string]any, error)) error {
	ctx := c.Request().Context()
	pr, _, body, version, err := p.formTask(c)
	if err != nil {
		return p.errorPage(c, err)
	}
	creates, err := change(pr, body)
	if err != nil {
		return p.errorPage(c, err)
	}
	if err := p.write(ctx, creates, body, version); err != nil {
		return p.errorPage(c, err)
	}
	return p.back(c, done)
}

// back returns to the page the form was on, with a notice.
func (p *Pages) back(c echo.Context, notice string) error {
	to := safeNext(c.FormValue("back"))
	if to == "/" {
		to = PathWork
	}
	sep := "?"
	if strings.Contains(to, "?") {
		sep = "&"
	}
	return c.Redirect(http.StatusSeeOther, to+sep+"notice="+url.QueryEscape(notice))
}

func required(c echo.Context, field, what string) (string, error) {
	v := strings.TrimSpace(c.FormValue(field))
	if v == "" {
		return "", fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, what+" is required", field)
	}
	if len(v) > 2000 {
		return "", fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, what+" may have at most 2,000 characters", field)
	}
	return v, nil
}

// markMissed fails the Task with the reason given: the visit did not happen in its window.
func (p *Pages) markMissed(c echo.Context) error {
	reason, err := required(c, "reason", "a reason")
	if err != nil {
		return p.errorPage(c, err)
	}
	noteText := strings.TrimSpace(c.FormValue("note"))
	return p.taskAction(c, "Visit marked missed.", func(pr *auth.Principal, body map[string]any) ([]map[string]any, error) {
		body["status"] = "failed"
		body["statusReason"] = map[string]any{"text": reason}
		body["lastModified"] = p.d.Clock().UTC().Format(time.RFC3339)
		addNote(body, p.note(pr, "Visit missed: "+reason))
		if noteText != "" {
			addNote(body, p.note(pr, noteText))
		}
		return nil, nil
	})
}

func (p *Pages) addNote(c echo.Context) error {
	text, err := required(c, "note", "the note's text")
	if err != nil {
		return p.errorPage(c, err)
	}
	return p.taskAction(c, "Note added.", func(pr *auth.Principal, body map[string]any) ([]map[string]any, error) {
		addNote(body, p.note(pr, text))
		return nil, nil
	})
}

// readDay reads a form's date, within [from, to] when they are given.
func readDay(c echo.Context, field string, from, to string) (string, error) {
	v := strings.TrimSpace(c.FormValue(field))
	if _, err := time.Parse(time.DateOnly, v); err != nil {
		return "", fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf("%q is not a date (YYYY-MM-DD)", v), field)
	}
	if (from != "" && v < from) || (to != "" && v > to) {
		return "", fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid,
			fmt.Sprintf("%s is outside %s to %s", v, from, to), field)
	}
	return v, nil
}

func window(body map[string]any) (start, end string) {
	r, _ := body["restriction"].(map[string]any)
	period, _ := r["period"].(map[string]any)
	start, _ = period["start"].(string)
	end, _ = period["end"].(string)
	return start, end
}

// reschedule books the visit for a day within its window, from today (in the registry's
// time zone) on: a booking is for a visit still to come.
func (p *Pages) reschedule(c echo.Context) error {
	today := p.d.FollowUp.Today(p.d.Clock())
	return p.taskAction(c, "Visit booked.", func(pr *auth.Principal, body map[string]any) ([]map[string]any, error) {
		start, end := window(body)
		on, err := readDay(c, "date", max(start, today), end)
		if err != nil {
			return nil, err
		}
		body["status"] = "accepted"
		delete(body, "statusReason")
		body["lastModified"] = p.d.Clock().UTC().Format(time.RFC3339)
		addNote(body, p.note(pr, "Visit booked for "+on))
		return nil, nil
	})
}

// reassign hands the visit to another site: the Task's owner becomes that Organization. A
// coordinator may hand it only to a site they act for, an administrator to any site of the
// registry; anything else is refused as a site the person does not know.
func (p *Pages) reassign(c echo.Context) error {
	ctx := c.Request().Context()
	pr, _ := auth.FromContext(ctx)
	site, err := required(c, "site", "the site to hand the visit to")
	if err != nil {
		return p.errorPage(c, err)
	}
	sites, err := p.sitesOf(ctx, pr)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(sites, func(s siteOption) bool { return s.ID == site })
	if i < 0 {
		return p.errorPage(c, fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid,
			fmt.Sprintf("site %q is not one you may hand visits to", site), "site"))
	}
	return p.taskAction(c, "Visit reassigned to "+sites[i].Name+".", func(pr *auth.Principal, body map[string]any) ([]map[string]any, error) {
		body["owner"] = map[string]any{"reference": "Organization/" + site, "display": sites[i].Name}
		body["lastModified"] = p.d.Clock().UTC().Format(time.RFC3339)
		addNote(body, p.note(pr, "Reassigned to "+sites[i].Name))
		return nil, nil
	})
}

// markLost records that the patient is lost to follow-up: a finished follow-up EpisodeOfCare
// typed lost-to-follow-up, which the follow-up hook reads in the same transaction and cancels
// the patient's open Tasks for; the scheduler makes no more.
func (p *Pages) markLost(c echo.Context) error {
	ctx := c.Request().Context()
	pr, _ := auth.FromContext(ctx)
	id := c.Param("id")
	notFound := fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("Patient/%s is not known", id))
	if !fhir.ValidID(id) {
		return p.errorPage(c, notFound)
	}
	if pr.Role == auth.RoleCoordinator {
		ok, err := p.d.InSites(ctx, "Patient", id, pr.Sites)
		if err != nil {
			return err
		}
		if !ok {
			return p.errorPage(c, notFound)
		}
	}
	today := p.d.FollowUp.Today(p.d.Clock())
	typ := func(code, display string) map[string]any {
		return map[string]any{"coding": []any{map[string]any{"system": registry.SystemCartreg, "code": code, "display": display}}}
	}
	episode := map[string]any{"resourceType": "EpisodeOfCare", "status": "finished",
		"type":    []any{typ(followup.CodeFollowUpEpisode, "CAR-T follow-up"), typ(followup.CodeLostToFollowUp, "Lost to follow-up")},
		"patient": map[string]any{"reference": "Patient/" + id}, "period": map[string]any{"end": today}}
	if err := p.write(ctx, []map[string]any{episode}, nil, 0); err != nil {
		return p.errorPage(c, err)
	}
	return p.back(c, "Patient marked lost to follow-up: their open visits are cancelled.")
}

// patientQuery selects one patient's open visits, however far ahead.
func patientQuery(id string) followup.Query {
	return followup.Query{Patients: []string{id}, Within: 3660}
}
