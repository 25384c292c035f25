package followup_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ics "github.com/arran4/golang-ical"
	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

// worklistWorld is the world with the HTTP server serve runs: the FHIR API and the work list.
type worklistWorld struct {
	*world
	url string
}

func newWorklistWorld(t *testing.T) *worklistWorld {
	w := newWorld(t)
	return &worklistWorld{world: w, url: w.h.URL}
}

type httpReply struct {
	status int
	header http.Header
	body   []byte
}

func (w *worklistWorld) do(method, path, body string, headers ...string) httpReply {
	w.t.Helper()
	r := w.h.DoURL(method, w.url+path, body, headers...)
	return httpReply{status: r.Status, header: r.Header, body: r.Body}
}

func (w *worklistWorld) get(path string, headers ...string) httpReply {
	w.t.Helper()
	r := w.do(http.MethodGet, path, "", headers...)
	if r.status != http.StatusOK {
		w.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	return r
}

type worklistJSON struct {
	AsOf       string         `json:"as_of"`
	WithinDays int            `json:"within_days"`
	Total      int            `json:"total"`
	Counts     map[string]int `json:"counts"`
	Items      []followup.Item
}

func (w *worklistWorld) list(query string) worklistJSON {
	w.t.Helper()
	r := w.get("/worklist" + query)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		w.t.Fatalf("GET /worklist%s: Content-Type %q", query, ct)
	}
	var out worklistJSON
	if err := json.Unmarshal(r.body, &out); err != nil {
		w.t.Fatalf("%v: %s", err, r.body)
	}
	return out
}

// describe renders items as "name milestone urgency status days", the way the assertions read.
func describe(items []followup.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		days := it.DaysOverdue
		switch it.Urgency {
		case followup.Due:
			days = *it.DaysLeft
		case followup.Upcoming:
			days = *it.DaysUntilOpen
		}
		out[i] = fmt.Sprintf("%s %s %s %s %d", it.Patient.Name, it.Milestone.Code, it.Urgency, it.Status, days)
	}
	return out
}

type namedPatient struct {
	given, family, mrn, birth string
}

// enrolPerson posts a named patient of the site with an identifier, a DLBCL diagnosis and an
// axi-cel infusion on the given day; it returns the patient and the infusion.
func (w *worklistWorld) enrolPerson(site string, p namedPatient, on string) (patient, infusion string) {
	w.t.Helper()
	ids := w.post(
		map[string]any{"resourceType": "Patient", "gender": "female", "birthDate": p.birth, "managingOrganization": ref(site),
			"name":       []any{map[string]any{"use": "official", "given": []any{p.given}, "family": p.family}},
			"identifier": []any{map[string]any{"system": "urn:oid:1.2.3.4", "type": cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"), "value": p.mrn}}},
		map[string]any{"resourceType": "Condition", "subject": ref(urn(0)), "code": cc(registry.SystemICD10CM, "C83.30")},
		w.infusionOf(urn(0), urn(1), site, on),
	)
	return ids[0], ids[2]
}

// taskBody reads a Task through the FHIR API, for a coordinator to change it.
func (w *worklistWorld) taskBody(id string) map[string]any {
	w.t.Helper()
	r := w.get("/fhir/Task/" + id)
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		w.t.Fatal(err)
	}
	delete(body, "meta")
	return body
}

// coordinatorPuts changes a Task through the FHIR API, as a coordinator's client does.
func (w *worklistWorld) coordinatorPuts(id string, change func(map[string]any)) {
	w.t.Helper()
	body := w.taskBody(id)
	change(body)
	raw, _ := json.Marshal(body)
	if r := w.do(http.MethodPut, "/fhir/Task/"+id, string(raw)); r.status != http.StatusOK {
		w.t.Fatalf("PUT Task/%s: %d %s", id, r.status, r.body)
	}
}

// worklistCohort is a registry on 2025-03-01 with follow-up Tasks in every state: two sites, one with
// a coordinator; Tasks overdue, due, upcoming and completed; and three a coordinator changed
// through the API (put on hold, marked failed, handed to another coordinator).
type worklistCohort struct {
	*worklistWorld
	siteA, siteB, coordinator, other string
	patients                         map[string]string // family name -> Patient reference
	infusions                        map[string]string // family name -> infusion reference
	planner                          *followup.Tracker
}

const cohortDay = "2025-03-01"

func newWorklistCohort(t *testing.T) *worklistCohort {
	w := newWorklistWorld(t)
	w.now = date(cohortDay)
	c := &worklistCohort{worklistWorld: w, patients: map[string]string{}, infusions: map[string]string{}}
	c.siteA = w.post(map[string]any{"resourceType": "Organization", "name": "Riverside Cancer Centre"})[0]
	c.siteB = w.post(map[string]any{"resourceType": "Organization", "name": "Harbour Hospital"})[0]
	c.coordinator = w.post(map[string]any{"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Okafor"}}})[0]
	c.other = w.post(map[string]any{"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Lindqvist"}}})[0]
	for _, e := range []struct {
		site string
		p    namedPatient
		on   string
	}{
		{c.siteA, namedPatient{"Ada", "Lovelace", "MRN-0001", "1955-12-10"}, "2024-12-31"},      // m1 overdue 15 days
		{c.siteB, namedPatient{"Frances", "Allen", "MRN-0008", "1962-08-04"}, "2024-12-31"},     // m1 overdue 15, marked failed
		{c.siteA, namedPatient{"Grace", "Hopper", "MRN-0002", "1956-12-09"}, "2025-01-30"},      // m1 due, 15 days left
		{c.siteB, namedPatient{"Alan", "Turing", "MRN-0003", "1952-06-23"}, "2025-01-20"},       // m1 due, 5 days left
		{c.siteB, namedPatient{"Barbara", "Liskov", "MRN-0004", "1959-11-07"}, "2025-02-17"},    // m1 opens in 11 days, handed over
		{c.siteA, namedPatient{"Edsger", "Dijkstra", "MRN-0005", "1960-05-11"}, "2025-02-09"},   // m1 opens in 3 days
		{c.siteA, namedPatient{"Katherine", "Johnson", "MRN-0006", "1958-08-26"}, "2024-11-21"}, // m1 assessed; m3 due, 4 left, on hold
		{c.siteB, namedPatient{"Donald", "Knuth", "MRN-0007", "1958-01-10"}, "2024-11-01"},      // m1 overdue 75, m3 overdue 16
	} {
		c.patients[e.p.family], c.infusions[e.p.family] = w.enrolPerson(e.site, e.p, e.on)
	}
	w.assess(c.patients["Johnson"], c.infusions["Johnson"], "2024-12-21", "lugano-cmr")
	w.owners[idOf(c.siteA)] = c.coordinator
	c.planner = w.h.App.FollowUp
	c.run(w.now)

	c.coordinatorPuts(c.task("Johnson", "m3").id, func(b map[string]any) {
		b["status"] = "on-hold"
		b["statusReason"] = map[string]any{"text": "patient moved abroad; trying to reach the new oncologist, Dr. Berg"}
	})
	c.coordinatorPuts(c.task("Allen", "m1").id, func(b map[string]any) {
		b["status"] = "failed"
		b["statusReason"] = map[string]any{"text": "lost to follow-up"}
	})
	c.coordinatorPuts(c.task("Liskov", "m1").id, func(b map[string]any) {
		b["owner"] = ref("http://cartreg.example/fhir/" + c.other) // absolute, as some clients write it
	})
	return c
}

func idOf(reference string) string { return reference[strings.IndexByte(reference, '/')+1:] }

func (c *worklistCohort) run(at time.Time) followup.Summary {
	c.t.Helper()
	sum, err := c.planner.Run(context.Background(), at)
	if err != nil {
		c.t.Fatal(err)
	}
	return sum
}

// report is the work list for q as of the cohort's now, from followup.Worklist itself.
func (c *worklistCohort) report(q followup.Query) *followup.Report {
	c.t.Helper()
	rep, err := c.planner.Worklist(c.db, func() time.Time { return c.now }).List(context.Background(), q)
	if err != nil {
		c.t.Fatal(err)
	}
	return rep
}

func (c *worklistCohort) task(family, milestone string) taskRow {
	c.t.Helper()
	row, ok := c.tasks(c.infusions[family])[milestone]
	if !ok {
		c.t.Fatalf("%s has no %s Task", family, milestone)
	}
	return row
}

func TestWorklist(t *testing.T) {
	t.Parallel()
	c := newWorklistCohort(t)

	t.Run("JSON lists the open Tasks by urgency", func(t *testing.T) {
		got := c.list("")
		want := []string{
			"Donald Knuth m1 overdue requested 75",
			"Donald Knuth m3 overdue requested 16",
			"Ada Lovelace m1 overdue requested 15", // Frances Allen's is as late, but failed
			"Katherine Johnson m3 due on-hold 4",   // the coordinator's status, still listed
			"Alan Turing m1 due requested 5",
			"Grace Hopper m1 due requested 15",
			"Edsger Dijkstra m1 upcoming requested 3",
			"Barbara Liskov m1 upcoming requested 11",
		}
		if r := describe(got.Items); !slices.Equal(r, want) {
			t.Errorf("work list:\n%s\nwant:\n%s", strings.Join(r, "\n"), strings.Join(want, "\n"))
		}
		// Looking ahead as far as Tasks are made (the world's lead time, 14 days), not further.
		if got.AsOf != cohortDay || got.WithinDays != 14 || got.Total != 8 ||
			got.Counts[followup.Overdue] != 3 || got.Counts[followup.Due] != 3 || got.Counts[followup.Upcoming] != 2 {
			t.Errorf("summary: as of %s, within %d, total %d, counts %v", got.AsOf, got.WithinDays, got.Total, got.Counts)
		}
		johnsonM1 := c.task("Johnson", "m1")
		for _, it := range got.Items {
			if it.TaskID == johnsonM1.id {
				t.Errorf("the completed month-1 Task is listed: %+v", it)
			}
		}

		knuth := got.Items[0]
		wantTask := c.task("Knuth", "m1")
		if knuth.TaskID != wantTask.id || knuth.Task != "Task/"+wantTask.id || knuth.Version != wantTask.version ||
			knuth.BusinessStatus != followup.Overdue || knuth.DaysLeft != nil || knuth.DaysUntilOpen != nil {
			t.Errorf("Knuth's month 1, task fields: %+v (want Task/%s version %d)", knuth, wantTask.id, wantTask.version)
		}
		wantFields := followup.Item{Milestone: followup.Milestone{Code: "m1", Label: "Month 1"},
			WindowStart: "2024-11-24", WindowEnd: "2024-12-16", TargetDate: "2024-12-01",
			Patient: followup.PatientInfo{Reference: c.patients["Knuth"], Name: "Donald Knuth", Identifier: "MRN-0007", BirthDate: "1958-01-10"},
			Site:    followup.Site{ID: idOf(c.siteB), Name: "Harbour Hospital"}, Owner: c.siteB,
			Product: "axicabtagene ciloleucel (Yescarta)", Infusion: c.infusions["Knuth"], InfusedOn: "2024-11-01",
			LastContact: "2024-11-01"} // the infusion, his last registry event
		gotFields := knuth
		gotFields.Task, gotFields.TaskID, gotFields.Version, gotFields.LastUpdated = "", "", 0, time.Time{}
		gotFields.Status, gotFields.BusinessStatus, gotFields.Urgency, gotFields.DaysOverdue, gotFields.Description = "", "", "", 0, ""
		if fmt.Sprintf("%+v", gotFields) != fmt.Sprintf("%+v", wantFields) {
			t.Errorf("Knuth's month 1:\n got %+v\nwant %+v", gotFields, wantFields)
		}
		if !strings.Contains(knuth.Description, "Month 1 follow-up") || !strings.Contains(knuth.Description, "2024-12-16") {
			t.Errorf("description: %q", knuth.Description)
		}

		johnson := got.Items[3]
		if johnson.Owner != c.coordinator || johnson.StatusReason != "patient moved abroad; trying to reach the new oncologist, Dr. Berg" || johnson.Site.Name != "Riverside Cancer Centre" || johnson.BusinessStatus != followup.Due ||
			johnson.WindowEnd != "2025-03-05" || johnson.Version != c.task("Johnson", "m3").version {
			t.Errorf("Johnson's month 3 (on hold): %+v", johnson)
		}
		if liskov := got.Items[7]; liskov.Owner != "http://cartreg.example/fhir/"+c.other {
			t.Errorf("Liskov's Task was handed to %s, listed with owner %q", c.other, liskov.Owner)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, tc := range []struct {
			query string
			want  []string // family names in order
		}{
			{"?owner=" + c.coordinator, []string{"Lovelace", "Johnson", "Hopper", "Dijkstra"}},
			{"?owner=" + c.siteB, []string{"Knuth", "Knuth", "Turing"}}, // Liskov's was handed over, Allen's failed
			{"?owner=" + c.other, []string{"Liskov"}},                   // stored as an absolute URL
			{"?owner=" + url.QueryEscape("https://elsewhere.example/fhir/"+c.other), []string{"Liskov"}},
			{"?owner=" + c.coordinator + "," + c.other, []string{"Lovelace", "Johnson", "Hopper", "Dijkstra", "Liskov"}},
			{"?owner=" + c.coordinator + "&owner=" + c.other, []string{"Lovelace", "Johnson", "Hopper", "Dijkstra", "Liskov"}},
			{"?site=" + idOf(c.siteB), []string{"Knuth", "Knuth", "Turing", "Liskov"}},
			{"?site=" + c.siteA, []string{"Lovelace", "Johnson", "Hopper", "Dijkstra"}},
			{"?site=" + idOf(c.siteA) + "&owner=" + c.siteB, nil},
			{"?patient=" + c.patients["Knuth"], []string{"Knuth", "Knuth"}},
			{"?patient=" + idOf(c.patients["Hopper"]) + "," + idOf(c.patients["Turing"]), []string{"Turing", "Hopper"}},
			{"?within=0d", []string{"Knuth", "Knuth", "Lovelace", "Johnson", "Turing", "Hopper"}},
			{"?within=7d", []string{"Knuth", "Knuth", "Lovelace", "Johnson", "Turing", "Hopper", "Dijkstra"}},
			{"?within=1w", []string{"Knuth", "Knuth", "Lovelace", "Johnson", "Turing", "Hopper", "Dijkstra"}},
			{"?within=2w", []string{"Knuth", "Knuth", "Lovelace", "Johnson", "Turing", "Hopper", "Dijkstra", "Liskov"}},
			{"?within=11d&site=" + idOf(c.siteB), []string{"Knuth", "Knuth", "Turing", "Liskov"}},
			{"?within=10d&site=" + idOf(c.siteB), []string{"Knuth", "Knuth", "Turing"}},
			{"?status=failed", []string{"Allen"}},
			{"?status=completed", []string{"Johnson"}},
			{"?status=on-hold,failed", []string{"Allen", "Johnson"}},
		} {
			got := c.list(tc.query)
			var names []string
			for _, it := range got.Items {
				names = append(names, strings.Fields(it.Patient.Name)[1])
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("%s: %v, want %v", tc.query, names, tc.want)
			}
		}
	})

	t.Run("sites by name or identifier, patients by MRN", func(t *testing.T) {
		// Harbour Hospital gets an identifier, as sites' Organizations usually carry one.
		harbour := c.get("/fhir/" + c.siteB)
		var org map[string]any
		if err := json.Unmarshal(harbour.body, &org); err != nil {
			t.Fatal(err)
		}
		delete(org, "meta")
		org["identifier"] = []any{map[string]any{"system": "urn:oid:2.16.840.1.113883.4.7", "value": "HH-0042"}}
		raw, _ := json.Marshal(org)
		if r := c.do(http.MethodPut, "/fhir/"+c.siteB, string(raw)); r.status != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", c.siteB, r.status, r.body)
		}
		harbourList := []string{"Knuth", "Knuth", "Turing", "Liskov"}
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"?site=" + url.QueryEscape("Riverside Cancer Centre"), []string{"Lovelace", "Johnson", "Hopper", "Dijkstra"}},
			{"?site=" + url.QueryEscape("Harbour Hospital"), harbourList},
			{"?site=HH-0042", harbourList},
			{"?site=" + url.QueryEscape("urn:oid:2.16.840.1.113883.4.7|HH-0042"), harbourList},
			{"?patient=MRN-0007", []string{"Knuth", "Knuth"}},
			{"?patient=" + url.QueryEscape("urn:oid:1.2.3.4|MRN-0003"), []string{"Turing"}},
			{"?patient=MRN-0002," + c.patients["Turing"], []string{"Turing", "Hopper"}},
			{"?patient=MRN-0006&status=completed", []string{"Johnson"}},
		} {
			var names []string
			for _, it := range c.list(tc.query).Items {
				names = append(names, strings.Fields(it.Patient.Name)[1])
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("%s: %v, want %v", tc.query, names, tc.want)
			}
		}
		// A value that names nothing says so, where an empty list would read as "nothing due".
		coordinatorA := c.h.Token(auth.RoleCoordinator, idOf(c.siteA))
		for _, tc := range []struct {
			path, param string
			token       string
		}{
			{"/worklist?patient=MRN-9999", "patient", ""},
			{"/worklist?patient=" + url.QueryEscape("urn:oid:9.9.9|MRN-0007"), "patient", ""},
			{"/worklist?patient=Patient/nobody", "patient", ""},
			{"/worklist?site=" + url.QueryEscape("Riverside Cancer Center"), "site", ""},
			{"/worklist.ics?site=Organization/nowhere", "site", ""},
			// Another site's patient is absent to a coordinator, as everywhere else.
			{"/worklist?patient=MRN-0007", "patient", coordinatorA},
		} {
			var r httpReply
			if tc.token != "" {
				reply := c.h.As(tc.token, http.MethodGet, tc.path, nil)
				r = httpReply{status: reply.Status, header: reply.Header, body: reply.Body}
			} else {
				r = c.do(http.MethodGet, tc.path, "")
			}
			var oo struct {
				Issue []struct {
					Code, Diagnostics string
					Expression        []string
				}
			}
			if err := json.Unmarshal(r.body, &oo); err != nil || r.status != http.StatusBadRequest || len(oo.Issue) != 1 ||
				oo.Issue[0].Code != "not-found" || !slices.Equal(oo.Issue[0].Expression, []string{tc.param}) {
				t.Errorf("%s: %d %s", tc.path, r.status, r.body)
			}
		}
		if r := c.h.As(coordinatorA, http.MethodGet, "/worklist?patient=MRN-0001", nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "Lovelace") {
			t.Errorf("a coordinator asking for their own patient by MRN: %d %s", r.Status, r.Body)
		}
		// Another hospital's patient with the same MRN: a bare value is ambiguous, system|value not.
		c.post(map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"system": "urn:oid:5.6.7", "value": "MRN-0001"}}})
		if r := c.do(http.MethodGet, "/worklist?patient=MRN-0001", ""); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "system|value") {
			t.Errorf("an MRN two patients share: %d %s", r.status, r.body)
		}
		if got := c.list("?patient=" + url.QueryEscape("urn:oid:1.2.3.4|MRN-0001")); len(got.Items) != 1 || got.Items[0].Patient.Name != "Ada Lovelace" {
			t.Errorf("the MRN with its system: %+v", got.Items)
		}
	})

	t.Run("a visit long overdue shows on today in the calendar", func(t *testing.T) {
		// On 20 June, Knuth's month 1 (window closed 2024-12-16) is 186 days overdue, beyond the
		// 180-day horizon; his month 3 (closed 2025-02-13) 127 days, within it.
		defer func(was time.Time) { c.now = was }(c.now)
		c.now = date("2025-06-20")
		cal, err := ics.ParseCalendar(bytes.NewReader(c.get("/worklist.ics?patient=" + c.patients["Knuth"]).body))
		if err != nil {
			t.Fatal(err)
		}
		m1, m3 := c.task("Knuth", "m1"), c.task("Knuth", "m3")
		var found int
		for _, ev := range cal.Events() {
			start := eventProp(ev, ics.ComponentPropertyDtStart)
			end := eventProp(ev, ics.ComponentPropertyDtEnd)
			summary := eventProp(ev, ics.ComponentPropertySummary)
			seq := eventProp(ev, ics.ComponentPropertySequence)
			switch ev.Id() {
			case m1.id + "@cartreg":
				found++
				if start != "20250620" || end != "20250621" || summary != "Overdue 186 days: Month 1 follow-up: Donald Knuth" ||
					seq != strconv.Itoa(m1.version-1+6) {
					t.Errorf("month 1, 186 days overdue: %s to %s, %q, SEQUENCE %s", start, end, summary, seq)
				}
			case m3.id + "@cartreg":
				found++
				if start != "20250116" || end != "20250214" || strings.HasPrefix(summary, "Overdue") || seq != strconv.Itoa(m3.version-1) {
					t.Errorf("month 3, 127 days overdue: %s to %s, %q, SEQUENCE %s", start, end, summary, seq)
				}
			}
		}
		if found != 2 || len(cal.Events()) != 2 {
			t.Errorf("Knuth's calendar has %d events, %d of them his Tasks", len(cal.Events()), found)
		}
	})

	t.Run("Accept with qualities", func(t *testing.T) {
		for accept, want := range map[string]string{
			"text/csv;q=0.5, application/json":            "application/json",
			"text/calendar;q=0.4, text/csv;q=0.6":         "text/csv",
			"text/calendar, text/csv":                     "text/calendar", // a tie: the first listed
			"text/csv;q=0, text/*":                        "text/calendar",
			"application/fhir+json, text/calendar;q=0.99": "application/json",
			"image/png": "application/json", // nothing offered: JSON
		} {
			if ct := c.get("/worklist", "Accept", accept).header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
				t.Errorf("Accept: %s gave %s, want %s", accept, ct, want)
			}
		}
		if ct := c.get("/worklist?_format=text%2Fcsv%3Bcharset%3Dutf-8", "Accept", "text/calendar").header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
			t.Errorf("_format=text/csv;charset=utf-8 gave %s", ct)
		}
	})

	t.Run("CSV has the same rows, for a spreadsheet", func(t *testing.T) {
		want := c.list("")
		uuid := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-`)
		for _, headers := range [][]string{{"Accept", "text/csv"}, nil} {
			path := "/worklist"
			if headers == nil {
				path += "?_format=csv"
			}
			r := c.get(path, headers...)
			if ct := r.header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			// Excel reads a CSV file without the UTF-8 byte-order mark in the legacy code page.
			body, ok := bytes.CutPrefix(r.body, []byte("\uFEFF"))
			if !ok {
				t.Errorf("%s: no byte-order mark: %q", path, r.body[:min(len(r.body), 20)])
			}
			if uuid.Match(body) {
				t.Errorf("%s: ids without ids=1:\n%s", path, body)
			}
			records, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(records[0], followup.CSVColumns) || len(records) != len(want.Items)+1 {
				t.Fatalf("header %v and %d rows, want %v and %d", records[0], len(records)-1, followup.CSVColumns, len(want.Items))
			}
			col := map[string]int{}
			for i, name := range records[0] {
				col[name] = i
			}
			for i, it := range want.Items {
				rec := records[i+1]
				got := []string{rec[col["Bucket"]], rec[col["Status"]], rec[col["Status reason"]], rec[col["Milestone"]],
					rec[col["Window opens"]], rec[col["Window closes"]], rec[col["Patient"]], rec[col["MRN"]], rec[col["Site"]]}
				wantRec := []string{it.Urgency, it.Status, it.StatusReason, it.Milestone.Label,
					it.WindowStart, it.WindowEnd, it.Patient.Name, it.Patient.Identifier, it.Site.Name}
				if !slices.Equal(got, wantRec) {
					t.Errorf("row %d: %q, want %q", i+1, got, wantRec)
				}
				if it.Urgency == followup.Overdue && rec[col["Days late"]] != strconv.Itoa(it.DaysOverdue) {
					t.Errorf("row %d: days late %q, want %d", i+1, rec[col["Days late"]], it.DaysOverdue)
				}
				if it.Urgency == followup.Due && rec[col["Days left"]] != strconv.Itoa(*it.DaysLeft) {
					t.Errorf("row %d: days left %q, want %d", i+1, rec[col["Days left"]], *it.DaysLeft)
				}
			}
		}
		// ids=1 adds the patient's and the Task's ids, last.
		r := c.get("/worklist?_format=csv&ids=1")
		records, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(r.body, []byte("\uFEFF")))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if wantHeader := append(slices.Clone(followup.CSVColumns), "Patient id", "Task id"); !slices.Equal(records[0], wantHeader) {
			t.Fatalf("ids=1: header %v", records[0])
		}
		for i, it := range want.Items {
			if rec := records[i+1]; rec[len(rec)-2] != idOf(it.Patient.Reference) || rec[len(rec)-1] != it.TaskID {
				t.Errorf("ids=1, row %d: %q", i+1, rec)
			}
		}
		if r := c.do(http.MethodGet, "/worklist?_format=csv&ids=yes", ""); r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte(`"ids"`)) {
			t.Errorf("ids=yes: %d %s", r.status, r.body)
		}
	})

	t.Run("iCalendar has one event per open Task, with stable UIDs", func(t *testing.T) {
		list := c.list("")
		first := c.get("/worklist.ics")
		if ct := first.header.Get("Content-Type"); ct != "text/calendar; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		for i, line := range strings.Split(strings.TrimSuffix(string(first.body), "\r\n"), "\r\n") {
			if len(line) > 75 || strings.Contains(line, "\n") {
				t.Fatalf("line %d is not a folded RFC 5545 content line: %q", i+1, line)
			}
		}
		if !bytes.Contains(first.body, []byte("\r\nREFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n")) {
			t.Errorf("no well-formed REFRESH-INTERVAL (RFC 7986) in\n%s", first.body)
		}
		cal, err := ics.ParseCalendar(bytes.NewReader(first.body))
		if err != nil {
			t.Fatal(err)
		}
		if p := calendarProperty(cal, ics.PropertyXWRCalName); p != "Follow-up work list" {
			t.Errorf("X-WR-CALNAME %q", p)
		}
		events := cal.Events()
		if len(events) != len(list.Items) {
			t.Fatalf("%d events, want %d", len(events), len(list.Items))
		}
		for i, it := range list.Items {
			ev := events[i]
			if ev.Id() != it.TaskID+"@cartreg" {
				t.Errorf("event %d: UID %q, want %s@cartreg", i, ev.Id(), it.TaskID)
			}
			start, end := eventProp(ev, ics.ComponentPropertyDtStart), eventProp(ev, ics.ComponentPropertyDtEnd)
			// Overdue by less than the horizon (180 days): still in its window. Long-overdue
			// visits are the subtest on the calendar horizon's.
			wantEnd := date(it.WindowEnd).AddDate(0, 0, 1).Format("20060102")
			if start != strings.ReplaceAll(it.WindowStart, "-", "") || end != wantEnd {
				t.Errorf("event %d: %s to %s, want the window %s–%s (DTEND %s)", i, start, end, it.WindowStart, it.WindowEnd, wantEnd)
			}
			if v := ev.GetProperty(ics.ComponentPropertyDtStart).ICalParameters["VALUE"]; !slices.Equal(v, []string{"DATE"}) {
				t.Errorf("event %d: DTSTART is not all-day: %v", i, v)
			}
			if s := eventProp(ev, ics.ComponentPropertySummary); s != it.Milestone.Label+" follow-up: "+it.Patient.Name {
				t.Errorf("event %d: SUMMARY %q", i, s)
			}
			desc := eventProp(ev, ics.ComponentPropertyDescription)
			if !strings.HasPrefix(desc, it.Description+"\n") || !strings.Contains(desc, "Task status: "+it.Status) ||
				!strings.Contains(desc, it.Patient.Identifier) {
				t.Errorf("event %d: DESCRIPTION %q", i, desc)
			}
			if seq := eventProp(ev, ics.ComponentPropertySequence); seq != strconv.Itoa(it.Version-1) {
				t.Errorf("event %d: SEQUENCE %s for version %d", i, seq, it.Version)
			}
			if stamp, err := ev.GetDtStampTime(); err != nil || !stamp.Equal(it.LastUpdated.Truncate(time.Second)) {
				t.Errorf("event %d: DTSTAMP %v (%v), want %v", i, stamp, err, it.LastUpdated)
			}
		}
		johnson := events[3]
		if desc := eventProp(johnson, ics.ComponentPropertyDescription); !strings.Contains(desc,
			"Task status: on-hold (patient moved abroad; trying to reach the new oncologist, Dr. Berg) — due, 4 days left") {
			t.Errorf("the on-hold Task's description: %q", desc)
		}

		again := c.get("/worklist?_format=ics")
		if !bytes.Equal(again.body, first.body) || again.header.Get("ETag") != first.header.Get("ETag") {
			t.Errorf("a second request gives another calendar:\n%s\n---\n%s", first.body, again.body)
		}
		if r := c.do(http.MethodGet, "/worklist.ics", "", "If-None-Match", first.header.Get("ETag")); r.status != http.StatusNotModified {
			t.Errorf("an unchanged calendar polled with its ETag: %d", r.status)
		}
		byAccept := c.get("/worklist", "Accept", "text/calendar")
		if !bytes.Equal(byAccept.body, first.body) {
			t.Errorf("Accept: text/calendar gives another calendar")
		}
		scoped := c.get("/worklist.ics?owner=" + c.coordinator)
		if cal, err := ics.ParseCalendar(bytes.NewReader(scoped.body)); err != nil || len(cal.Events()) != 4 ||
			calendarProperty(cal, ics.PropertyXWRCalName) != "Follow-up work list — "+c.coordinator {
			t.Errorf("a coordinator's calendar: %v\n%s", err, scoped.body)
		}

		// Four days on, the nightly run turns Dijkstra's month 1 due (a new Task version) and
		// creates Lovelace's and Allen's month 3: each event keeps its UID, the changed one a higher
		// SEQUENCE.
		dijkstra := c.task("Dijkstra", "m1")
		c.now = date("2025-03-05")
		c.run(c.now)
		if after := c.task("Dijkstra", "m1"); after.business != followup.Due || after.version != dijkstra.version+1 {
			t.Fatalf("Dijkstra's month 1 after the run: %+v", after)
		}
		later, err := ics.ParseCalendar(bytes.NewReader(c.get("/worklist.ics").body))
		if err != nil {
			t.Fatal(err)
		}
		before := map[string]*ics.VEvent{}
		for _, ev := range events {
			before[ev.Id()] = ev
		}
		seen := map[string]bool{}
		for _, ev := range later.Events() {
			seen[ev.Id()] = true
			old, ok := before[ev.Id()]
			if !ok {
				if ev.Id() != c.task("Lovelace", "m3").id+"@cartreg" && ev.Id() != c.task("Allen", "m3").id+"@cartreg" {
					t.Errorf("new event %s", ev.Id())
				}
				continue
			}
			oldSeq, newSeq := eventProp(old, ics.ComponentPropertySequence), eventProp(ev, ics.ComponentPropertySequence)
			if ev.Id() == dijkstra.id+"@cartreg" {
				if newSeq != strconv.Itoa(dijkstra.version) || !strings.Contains(eventProp(ev, ics.ComponentPropertyDescription), "— due") {
					t.Errorf("Dijkstra's event after the run: SEQUENCE %s (was %s)", newSeq, oldSeq)
				}
			} else if newSeq != oldSeq {
				t.Errorf("event %s: SEQUENCE %s, was %s, though its Task did not change", ev.Id(), newSeq, oldSeq)
			}
		}
		for uid := range before {
			if !seen[uid] {
				t.Errorf("event %s gone after a run that only changed a business status", uid)
			}
		}
	})

	t.Run("bad parameters are refused with an OperationOutcome", func(t *testing.T) {
		for _, tc := range []struct{ path, param string }{
			{"/worklist?within=3m", "within"},
			{"/worklist?within=12h", "within"},
			{"/worklist?within=-1d", "within"},
			{"/worklist?within=99999d", "within"},
			{"/worklist?within=1d&within=2d", "within"},
			{"/worklist?owner=7", "owner"},
			{"/worklist?owner=Observation/7", "owner"},
			{"/worklist?owner=Practitioner/", "owner"},
			{"/worklist?owner=x/Practitioner/7", "owner"},
			{"/worklist?site=Organization/" + url.QueryEscape("a b"), "site"},
			{"/worklist?patient=" + url.QueryEscape("Patient/<x>"), "patient"},
			{"/worklist?status=done", "status"},
			{"/worklist?_format=xml", "_format"},
			{"/worklist?ownr=" + c.coordinator, "ownr"},
			{"/worklist.ics?_format=csv", "_format"},
			{"/worklist.ics?sites=1", "sites"},
		} {
			r := c.do(http.MethodGet, tc.path, "")
			var oo struct {
				ResourceType string
				Issue        []struct {
					Severity, Code, Diagnostics string
					Expression                  []string
				}
			}
			if err := json.Unmarshal(r.body, &oo); err != nil || r.status != http.StatusBadRequest ||
				r.header.Get("Content-Type") != "application/fhir+json; charset=utf-8" || oo.ResourceType != "OperationOutcome" ||
				len(oo.Issue) != 1 || oo.Issue[0].Code != "invalid" || !slices.Equal(oo.Issue[0].Expression, []string{tc.param}) {
				t.Errorf("%s: %d %s", tc.path, r.status, r.body)
			}
		}
	})
}

func eventProp(ev *ics.VEvent, p ics.ComponentProperty) string {
	if v := ev.GetProperty(p); v != nil {
		return v.Value
	}
	return ""
}

func calendarProperty(cal *ics.Calendar, p ics.Property) string {
	for _, cp := range cal.CalendarProperties {
		if cp.IANAToken == string(p) {
			return cp.Value
		}
	}
	return ""
}

// The work list over a registry of a few thousand Tasks: its answer checked
// against the scheduler's own record.
func TestWorklistAtScale(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a registry of 1,000 infusions")
	}
	w := newWorklistWorld(t)
	ctx := context.Background()
	w.now = date("2020-01-01")
	var sites []string
	for i := range 4 {
		sites = append(sites, w.post(map[string]any{"resourceType": "Organization", "name": fmt.Sprintf("Site %d", i)})[0])
	}
	coordinator := w.post(map[string]any{"resourceType": "Practitioner"})[0]
	const infusions = 1000
	const perBundle = 33 // 99 entries: the world's Bundle limit is 100
	for start := 0; start < infusions; start += perBundle {
		var entries []any
		for i := start; i < min(start+perBundle, infusions); i++ {
			p, dx := fmt.Sprintf("urn:uuid:%08d-0000-4000-8000-000000000001", i), fmt.Sprintf("urn:uuid:%08d-0000-4000-8000-000000000002", i)
			site := sites[i%len(sites)]
			on := date("2020-01-01").AddDate(0, 0, i*5/2).Format(time.DateOnly)
			for _, e := range []struct {
				url string
				res map[string]any
			}{
				{p, map[string]any{"resourceType": "Patient", "managingOrganization": ref(site), "birthDate": "1960-01-01",
					"name": []any{map[string]any{"given": []any{"Patient"}, "family": strconv.Itoa(i)}}}},
				{dx, map[string]any{"resourceType": "Condition", "subject": ref(p), "code": cc(registry.SystemICD10CM, "C83.30")}},
				{fmt.Sprintf("urn:uuid:%08d-0000-4000-8000-000000000003", i), w.infusionOf(p, dx, site, on)},
			} {
				entries = append(entries, map[string]any{"fullUrl": e.url, "resource": e.res,
					"request": map[string]any{"method": "POST", "url": e.res["resourceType"]}})
			}
		}
		raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
		if _, err := w.api.ProcessBundle(ctx, raw, ""); err != nil {
			t.Fatal(err)
		}
	}
	w.owners[idOf(sites[0])] = coordinator
	planner := w.h.App.FollowUp
	// Two runs a year apart: the first year's Tasks are written (and the older ones closed)
	// before the last run, as the nightly job would have.
	for _, at := range []string{"2024-06-01", "2026-12-01"} {
		w.now = date(at)
		if _, err := planner.Run(ctx, w.now); err != nil {
			t.Fatal(err)
		}
	}
	tasks := w.count(`SELECT count(*) FROM followup_task`)
	open := w.count(`SELECT count(*) FROM followup_task WHERE status = 'requested' AND business_status <> 'upcoming'`)
	upcoming := w.count(`SELECT count(*) FROM followup_task WHERE status = 'requested' AND business_status = 'upcoming'`)
	t.Logf("%d Tasks, %d overdue or due, %d upcoming", tasks, open, upcoming)
	if tasks < 3000 {
		t.Fatalf("only %d Tasks", tasks)
	}

	start := time.Now()
	all := w.get("/worklist?within=30d")
	elapsed := time.Since(start)
	var got worklistJSON
	if err := json.Unmarshal(all.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Total != open+upcoming || got.Counts[followup.Upcoming] != upcoming {
		t.Errorf("work list of %d (%v), the scheduler has %d open and %d upcoming", got.Total, got.Counts, open, upcoming)
	}
	t.Logf("the whole work list (%d Tasks, %d bytes) in %s", got.Total, len(all.body), elapsed)
	mine := w.list("?owner=" + coordinator)
	if mine.Total == 0 || mine.Total >= got.Total {
		t.Errorf("the coordinator's list has %d of %d", mine.Total, got.Total)
	}

	if os.Getenv("CARTREG_EXPLAIN") != "" {
		if _, err := w.db.Exec(ctx, "ANALYZE"); err != nil {
			t.Fatal(err)
		}
		for _, probe := range strings.Split(os.Getenv("CARTREG_PROBES"), ";;") {
			if probe == "" {
				continue
			}
			start := time.Now()
			var n int
			if err := w.db.QueryRow(ctx, probe).Scan(&n); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d in %s", probe, n, time.Since(start))
		}
		for _, query := range []followup.Query{{Within: 30}, {Within: 30, Owners: []string{coordinator}}} {
			rec := &recordingDB{DBTX: w.db}
			if _, err := followup.New(followup.Config{}, w.store, w.reg.Plan()).Worklist(rec, func() time.Time { return w.now }).List(ctx, query); err != nil {
				t.Fatal(err)
			}
			rows, err := w.db.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+rec.sql, rec.args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			t.Logf("EXPLAIN ANALYZE %+v:\n%s", query, strings.Join(plan, "\n"))
		}
	}
}

// recordingDB notes the last query run through it, to explain it.
type recordingDB struct {
	fhir.DBTX
	sql  string
	args []any
}

func (r *recordingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return r.DBTX.Query(ctx, sql, args...)
}

// The work list's today is the scheduler's: the calendar day in the registry's time zone.
func TestWorklistCountsDaysInTheRegistrysTimeZone(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	noonUTC := func() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) }
	for zone, want := range map[*time.Location]string{
		time.UTC: "2025-03-01", time.FixedZone("UTC+14", 14*3600): "2025-03-02", time.FixedZone("UTC-12", -12*3600): "2025-03-01",
	} {
		s := followup.New(followup.Config{Location: zone}, w.store, w.reg.Plan())
		rep, err := s.Worklist(w.db, noonUTC).List(context.Background(), followup.Query{})
		if err != nil || rep.AsOf != want {
			t.Errorf("%s: as of %v, %v; want %s", zone, rep, err, want)
		}
	}
}
