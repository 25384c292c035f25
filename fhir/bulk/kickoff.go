package bulk

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/httpx"
)

// The kick-off's levels.
const (
	levelSystem  = "system"
	levelPatient = "patient"
	levelGroup   = "group"
)

// outputFormats are the _outputFormat values the specification says mean NDJSON.
var outputFormats = []string{"application/fhir+ndjson", "application/ndjson", "ndjson"}

// unsupported are parameters of the specification (v2 and the drafts after it) this server
// does not implement: a 400, unless the client prefers lenient handling.
var unsupported = []string{"_elements", "includeAssociatedData", "_until", "organizeOutputBy", "allowPartialManifests"}

// param is one kick-off parameter, from the query string or a Parameters body, with where
// an OperationOutcome should say it was.
type param struct {
	name, value, location string
}

// request is a kick-off, read and checked.
type request struct {
	types       []string // as asked; nil: every type the principal may read
	since       *time.Time
	typeFilters map[string][]string
	format      string
	patients    []string // the patient parameter (POST): references, as ids
}

func outcome(status int, code fhir.IssueType, location, format string, args ...any) error {
	var loc []string
	if location != "" {
		loc = []string{location}
	}
	return fhir.NewOutcome(status, code, fmt.Sprintf(format, args...), loc...)
}

// preferences reads the Prefer headers: respond-async, and handling=lenient.
func preferences(req *http.Request) (async, lenient bool) {
	for _, h := range req.Header.Values("Prefer") {
		for _, part := range strings.Split(h, ",") {
			switch strings.ReplaceAll(strings.TrimSpace(strings.ToLower(part)), " ", "") {
			case "respond-async":
				async = true
			case "handling=lenient":
				lenient = true
			}
		}
	}
	return async, lenient
}

// kickOff answers GET and POST of /fhir/$export, /fhir/Patient/$export and
// /fhir/Group/{id}/$export: the job is queued and its status URL returned.
func (x *Exporter) kickOff(level string) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		p, ok := auth.FromContext(ctx)
		if !ok {
			return outcome(http.StatusUnauthorized, fhir.IssueType("login"), "", "this needs a bearer token")
		}
		async, lenient := preferences(c.Request())
		if !async {
			return outcome(http.StatusBadRequest, fhir.Required, "Prefer", "$export runs asynchronously: send Prefer: respond-async")
		}
		if httpx.Preferred(c.Request().Header.Get("Accept"), "application/fhir+json", "application/json") == "" {
			return outcome(http.StatusNotAcceptable, fhir.NotSupported, "Accept", "the kick-off answers in application/fhir+json only")
		}
		ps, err := readParams(c, level)
		if err != nil {
			return err
		}
		req, err := x.parseRequest(ps, level, lenient)
		if err != nil {
			return err
		}
		types, err := allowedTypes(p, req.types)
		if err != nil {
			return err
		}
		for t := range req.typeFilters {
			if !slices.Contains(types, t) {
				return outcome(http.StatusBadRequest, fhir.Value, "_typeFilter", "_typeFilter for %s, which is not among the types exported", t)
			}
		}
		base := x.baseURL(c)
		var patients []string
		switch level {
		case levelGroup:
			id := c.Param("id")
			if !fhir.ValidID(id) {
				return outcome(http.StatusBadRequest, fhir.Value, "", "%q is not a valid resource id", id)
			}
			if !p.Scopes.Allows("Group", auth.Read) {
				return outcome(http.StatusForbidden, fhir.IssueType("forbidden"), "", "a Group export needs system/Group.read")
			}
			if patients, err = x.groupMembers(ctx, base, id); err != nil {
				return err
			}
		}
		if req.patients != nil {
			if level == levelGroup {
				patients = intersect(patients, req.patients)
			} else {
				patients = req.patients
			}
		}

		now := x.now()
		pr := params{Types: types, Since: req.since, TypeFilters: req.typeFilters, OutputFormat: req.format}
		id := uuid.NewString()
		reqURL := base + strings.TrimPrefix(c.Request().URL.Path, "/fhir")
		if c.Request().Method == http.MethodGet && c.Request().URL.RawQuery != "" {
			reqURL += "?" + c.Request().URL.RawQuery
		}
		var n int
		err = pgx.BeginFunc(ctx, x.db, func(tx pgx.Tx) error {
			// One principal's kick-offs take turns, so two at once cannot both pass the limit.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('cartreg.bulk:' || $1))`, principalKey(p)); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM bulk_export_job WHERE principal = $1 AND state IN ('accepted', 'in-progress')`,
				principalKey(p)).Scan(&n); err != nil {
				return err
			}
			if n >= x.cfg.MaxJobs {
				return nil
			}
			_, err := tx.Exec(ctx, `INSERT INTO bulk_export_job (id, state, level, request, base, principal, params, patients,
				transaction_time, created_at, updated_at, expires_at) VALUES ($1, 'accepted', $2, $3, $4, $5, $6, $7, $8, $8, $8, $9)`,
				id, level, reqURL, base, principalKey(p), pr, patientsArg(level, patients), now, now.Add(x.cfg.Retention))
			return err
		})
		if err != nil {
			return fmt.Errorf("queueing an export: %w", err)
		}
		if n >= x.cfg.MaxJobs {
			return outcome(http.StatusTooManyRequests, fhir.Throttled, "",
				"%d exports of yours are unfinished, the most one client may have (CARTREG_EXPORT_MAX_JOBS=%d): wait for one, or DELETE one", n, x.cfg.MaxJobs)
		}
		x.wakeWorker()
		c.Response().Header().Set("Content-Location", base+"/$export-status/"+id)
		oo, err := fhir.MarshalOutcome([]fhir.Issue{{Severity: fhir.Information, Code: fhir.Informational,
			Diagnostics: "export queued; poll the Content-Location for its status"}}, false)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusAccepted, "application/fhir+json", oo)
	}
}

// patientsArg is the job's patients column: NULL unless the export is limited to listed patients.
func patientsArg(level string, patients []string) any {
	if level == levelSystem || patients == nil {
		return nil
	}
	return patients
}

func intersect(a, b []string) []string {
	out := []string{}
	for _, s := range b {
		if slices.Contains(a, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func principalKey(p *auth.Principal) string { return p.Kind + "|" + p.Subject }

// readParams collects the kick-off's parameters: the query string, and a POST's Parameters
// resource.
func readParams(c echo.Context, level string) ([]param, error) {
	// Query parameters count for a POST too: clients such as Medplum's send _type and _since
	// there, with an empty body.
	var out []param
	for name, values := range c.QueryParams() {
		for _, v := range values {
			out = append(out, param{name: name, value: v, location: name})
		}
	}
	slices.SortStableFunc(out, func(a, b param) int { return strings.Compare(a.name, b.name) })
	if c.Request().Method == http.MethodGet {
		return out, nil
	}
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return out, nil
	}
	var body struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name           string  `json:"name"`
			ValueString    *string `json:"valueString"`
			ValueCode      *string `json:"valueCode"`
			ValueInstant   *string `json:"valueInstant"`
			ValueDateTime  *string `json:"valueDateTime"`
			ValueReference *struct {
				Reference string `json:"reference"`
			} `json:"valueReference"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.ResourceType != "Parameters" {
		return nil, outcome(http.StatusBadRequest, fhir.Structure, "Parameters", "a POST kick-off's body is a Parameters resource")
	}
	for i, p := range body.Parameter {
		loc := fmt.Sprintf("Parameters.parameter[%d]", i)
		var v *string
		for _, x := range []*string{p.ValueString, p.ValueCode, p.ValueInstant, p.ValueDateTime} {
			if x != nil {
				v = x
			}
		}
		if p.ValueReference != nil {
			v = &p.ValueReference.Reference
		}
		if v == nil {
			return nil, outcome(http.StatusBadRequest, fhir.Required, loc, "parameter %q has no value", p.Name)
		}
		out = append(out, param{name: p.Name, value: *v, location: loc})
	}
	return out, nil
}

// typeFilterStart finds where one _typeFilter query ends and the next begins in a
// comma-separated list: at a comma followed by a resource type and "?". Commas inside a query
// separate a parameter's alternatives.
var typeFilterStart = regexp.MustCompile(`,([A-Z][A-Za-z]+)\?`)

func splitTypeFilters(v string) []string {
	var out []string
	for {
		loc := typeFilterStart.FindStringIndex(v)
		if loc == nil || !fhir.IsResourceType(v[loc[0]+1:loc[1]-1]) {
			return append(out, v)
		}
		out = append(out, v[:loc[0]])
		v = v[loc[0]+1:]
	}
}

func (x *Exporter) parseRequest(ps []param, level string, lenient bool) (*request, error) {
	req := &request{format: "application/fhir+ndjson"}
	seen := map[string]bool{}
	for _, p := range ps {
		switch p.name {
		case "_outputFormat":
			if seen[p.name] {
				return nil, outcome(http.StatusBadRequest, fhir.Value, p.location, "_outputFormat is given twice")
			}
			if !slices.Contains(outputFormats, p.value) {
				return nil, outcome(http.StatusBadRequest, fhir.NotSupported, p.location, "_outputFormat %q: this server writes %s", p.value, strings.Join(outputFormats, ", "))
			}
			req.format = "application/fhir+ndjson"
		case "_since":
			if seen[p.name] {
				return nil, outcome(http.StatusBadRequest, fhir.Value, p.location, "_since is given twice")
			}
			t, err := time.Parse(time.RFC3339Nano, p.value)
			if err != nil {
				return nil, outcome(http.StatusBadRequest, fhir.Value, p.location, "_since %q is not a FHIR instant (such as 2026-01-02T03:04:05Z)", p.value)
			}
			req.since = &t
		case "_type":
			for _, t := range strings.Split(p.value, ",") {
				t = strings.TrimSpace(t)
				if !fhir.IsResourceType(t) {
					return nil, outcome(http.StatusBadRequest, fhir.NotSupported, p.location, "_type: %q is not an R4 resource type", t)
				}
				if !slices.Contains(req.types, t) {
					req.types = append(req.types, t)
				}
			}
		case "_typeFilter":
			for _, f := range splitTypeFilters(p.value) {
				typ, err := x.searcher.CheckExportFilter(f)
				if err != nil {
					return nil, outcome(http.StatusBadRequest, fhir.NotSupported, p.location, "_typeFilter %q: %v", f, err)
				}
				if req.typeFilters == nil {
					req.typeFilters = map[string][]string{}
				}
				req.typeFilters[typ] = append(req.typeFilters[typ], f)
			}
		case "patient":
			if level == levelSystem {
				return nil, outcome(http.StatusBadRequest, fhir.NotSupported, p.location, "patient is for Patient and Group exports")
			}
			id, ok := strings.CutPrefix(p.value, "Patient/")
			if !ok || !fhir.ValidID(id) {
				return nil, outcome(http.StatusBadRequest, fhir.Value, p.location, "patient %q: want a reference Patient/{id}", p.value)
			}
			req.patients = append(req.patients, id)
		default:
			if lenient {
				continue
			}
			if slices.Contains(unsupported, p.name) {
				return nil, outcome(http.StatusBadRequest, fhir.NotSupported, p.location, "%s is not supported by this server (Prefer: handling=lenient ignores it)", p.name)
			}
			return nil, outcome(http.StatusBadRequest, fhir.NotSupported, p.location, "%s is not a parameter of $export (Prefer: handling=lenient ignores it)", p.name)
		}
		seen[p.name] = true
	}
	if req.types != nil {
		for t := range req.typeFilters {
			if !slices.Contains(req.types, t) {
				return nil, outcome(http.StatusBadRequest, fhir.Value, "_typeFilter", "_typeFilter for %s, which _type does not ask for", t)
			}
		}
	}
	return req, nil
}

// allowedTypes is what the principal may export: every type asked for must be readable by
// its scopes (system/*.read or system/<Type>.read); with no _type, the types it may read.
func allowedTypes(p *auth.Principal, asked []string) ([]string, error) {
	if asked != nil {
		for _, t := range asked {
			if !p.Scopes.Allows(t, auth.Read) {
				return nil, outcome(http.StatusForbidden, fhir.IssueType("forbidden"), "_type", "the token's scopes do not allow reading %s (system/%s.read)", t, t)
			}
		}
		out := slices.Clone(asked)
		slices.Sort(out)
		return out, nil
	}
	var out []string
	for _, t := range fhir.ResourceTypes() {
		if p.Scopes.Allows(t, auth.Read) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, outcome(http.StatusForbidden, fhir.IssueType("forbidden"), "", "the token's scopes allow reading no resource type (system/*.read)")
	}
	slices.Sort(out)
	return out, nil
}

func (x *Exporter) baseURL(c echo.Context) string {
	if x.cfg.BaseURL != "" {
		return strings.TrimSuffix(x.cfg.BaseURL, "/")
	}
	return c.Scheme() + "://" + c.Request().Host + "/fhir"
}
