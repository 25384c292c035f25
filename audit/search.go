package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
)

// Page sizes of an AuditEvent search.
const (
	DefaultCount = 50
	MaxCount     = 1000
)

// Register mounts GET /fhir/AuditEvent (search) and GET /fhir/AuditEvent/:id (read) on e,
// behind guard, which decides who may read the trail. A nil guard is a wiring mistake and
// panics: the trail must never be served unguarded.
func (r *Recorder) Register(e *echo.Echo, guard echo.MiddlewareFunc) {
	if guard == nil {
		panic("audit: Register needs a guard")
	}
	e.GET("/fhir/AuditEvent", r.search, guard)
	e.GET("/fhir/AuditEvent/:id", r.read, guard)
}

// read answers GET /fhir/AuditEvent/:id.
func (r *Recorder) read(c echo.Context) error {
	if err := checkFormat(c); err != nil {
		return err
	}
	notFound := fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, "AuditEvent/"+c.Param("id")+" is not known")
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return notFound
	}
	var body []byte
	err = r.db.QueryRow(c.Request().Context(), `SELECT event::text FROM audit_event WHERE event_id = $1`, id).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound
	}
	if err != nil {
		return fmt.Errorf("reading an audit event: %w", err)
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return fmt.Errorf("decoding audit event %s: %w", id, err)
	}
	return writeFHIR(c, render(ev))
}

type bundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type bundleEntry struct {
	FullURL  string     `json:"fullUrl"`
	Resource auditEvent `json:"resource"`
	Search   struct {
		Mode string `json:"mode"`
	} `json:"search"`
}

type bundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Total        *int64        `json:"total,omitempty"`
	Link         []bundleLink  `json:"link"`
	Entry        []bundleEntry `json:"entry,omitempty"`
}

// query is a parsed AuditEvent search: a WHERE clause with numbered arguments.
type query struct {
	where []string
	args  []any
	count int
	asc   bool
	total bool
	after *cursor
}

func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// cursor is the last row of a page: the next one starts after it.
type cursor struct {
	recorded time.Time
	id       int64
}

func (k cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.recorded.UnixMicro(), 10) + "." + strconv.FormatInt(k.id, 10)))
}

func parseCursor(s string) (*cursor, error) {
	bad := fhir.NewOutcome(http.StatusBadRequest, fhir.Value, "_cursor is not one this server made")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	a, b, ok := strings.Cut(string(raw), ".")
	micros, err1 := strconv.ParseInt(a, 10, 64)
	id, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return nil, bad
	}
	return &cursor{recorded: time.UnixMicro(micros).UTC(), id: id}, nil
}

// parseSearch reads the search parameters. Any it does not know is a 400: ignoring it would
// widen what a privacy officer sees and let them believe it was narrowed.
func parseSearch(params url.Values) (*query, error) {
	q := &query{count: DefaultCount}
	for key, values := range params {
		for _, value := range values {
			if err := q.add(key, value); err != nil {
				return nil, err
			}
		}
	}
	return q, nil
}

func (q *query) add(key, value string) error {
	bad := func(format string, args ...any) error {
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Value, key+": "+fmt.Sprintf(format, args...))
	}
	if strings.Contains(key, ":") {
		return fhir.NewOutcome(http.StatusBadRequest, fhir.NotSupported, key+": modifiers are not supported on AuditEvent searches")
	}
	if value == "" && !strings.HasPrefix(key, "_") {
		return bad("an empty value")
	}
	list := strings.Split(value, ",")
	switch key {
	case "date":
		var ors []string
		for _, v := range list {
			cond, err := q.dateCondition(v)
			if err != nil {
				return bad("%v", err)
			}
			ors = append(ors, cond)
		}
		q.where = append(q.where, "("+strings.Join(ors, " OR ")+")")
	case "agent", "who":
		for i, v := range list {
			if _, after, ok := strings.Cut(v, "|"); ok {
				list[i] = after // system|value: the value is the agent's id whatever its system
			}
		}
		q.where = append(q.where, "agent_who = ANY("+q.arg(list)+"::text[])")
	case "entity":
		q.where = append(q.where, "entities && "+q.arg(list)+"::text[]")
	case "patient":
		for i, v := range list {
			list[i] = strings.TrimPrefix(v, "Patient/")
		}
		q.where = append(q.where, "patients && "+q.arg(list)+"::text[]")
	case "action":
		for _, v := range list {
			if !validAction(v) {
				return bad("%q is not an AuditEvent action (C, R, U, D or E)", v)
			}
		}
		q.where = append(q.where, "action = ANY("+q.arg(list)+"::text[])")
	case "outcome":
		var ors []string
		for _, v := range list {
			if system, code, ok := strings.Cut(v, "|"); ok {
				if system != "" && system != "http://hl7.org/fhir/audit-event-outcome" {
					ors = append(ors, "false")
					continue
				}
				v = code
			}
			switch v {
			case "0":
				ors = append(ors, "outcome < 400")
			case "4":
				ors = append(ors, "(outcome >= 400 AND outcome < 500)")
			case "8":
				ors = append(ors, "outcome >= 500")
			case "12":
				ors = append(ors, "false") // major failure: not one an HTTP status is mapped to
			default:
				return bad("%q is not an AuditEvent outcome (0, 4, 8 or 12)", v)
			}
		}
		q.where = append(q.where, "("+strings.Join(ors, " OR ")+")")
	case "subtype":
		var codes []string
		for _, v := range list {
			system, code, ok := strings.Cut(v, "|")
			if !ok {
				codes = append(codes, v)
				continue
			}
			switch {
			case system == "" || system == SystemRestfulInteraction:
				codes = append(codes, code)
			case system == SystemDICOM && code == "110122":
				codes = append(codes, "login")
			}
		}
		q.where = append(q.where, "interaction = ANY("+q.arg(codes)+"::text[])")
	case "_count":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return bad("%q is not a number of entries", value)
		}
		q.count = min(n, MaxCount)
	case "_sort":
		switch value {
		case "-date", "":
			q.asc = false
		case "date":
			q.asc = true
		default:
			return fhir.NewOutcome(http.StatusBadRequest, fhir.NotSupported, "_sort: AuditEvents sort by date or -date only")
		}
	case "_total":
		switch value {
		case "accurate":
			q.total = true
		case "none", "estimate", "":
		default:
			return bad("%q is not none, estimate or accurate", value)
		}
	case "_cursor":
		k, err := parseCursor(value)
		if err != nil {
			return err
		}
		q.after = k
	case "_format", "_pretty":
		// read by checkFormat and writeFHIR
	default:
		return fhir.NewOutcome(http.StatusBadRequest, fhir.NotSupported, fmt.Sprintf(
			"%s is not a search parameter of AuditEvent here; use date, agent, who, entity, patient, action, outcome, subtype, _count or _sort", key))
	}
	return nil
}

// dateCondition is one date value with its prefix as SQL on recorded. A value stands for the
// range its precision gives (2024-05 is all of May, in UTC when no offset is given).
func (q *query) dateCondition(v string) (string, error) {
	prefix := "eq"
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	lo, hi, err := dateRange(v)
	if err != nil {
		return "", err
	}
	switch prefix {
	case "eq":
		return "(recorded >= " + q.arg(lo) + " AND recorded < " + q.arg(hi) + ")", nil
	case "ge":
		return "recorded >= " + q.arg(lo), nil
	case "gt":
		return "recorded >= " + q.arg(hi), nil
	case "le":
		return "recorded < " + q.arg(hi), nil
	case "lt":
		return "recorded < " + q.arg(lo), nil
	}
	return "", fmt.Errorf("the prefix %q is not supported (eq, ge, gt, le, lt)", prefix)
}

// dateRange is the half-open range of instants a FHIR date or dateTime stands for.
func dateRange(v string) (time.Time, time.Time, error) {
	layouts := []struct {
		layout string
		next   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{"2006-01-02T15:04Z07:00", func(t time.Time) time.Time { return t.Add(time.Minute) }},
		{"2006-01-02T15:04:05Z07:00", func(t time.Time) time.Time { return t.Add(time.Second) }},
		{"2006-01-02T15:04:05.999999999Z07:00", func(t time.Time) time.Time { return t.Add(time.Microsecond) }},
		{"2006-01-02T15:04:05", func(t time.Time) time.Time { return t.Add(time.Second) }},
	}
	for _, l := range layouts {
		if l.layout == "2006-01-02T15:04:05.999999999Z07:00" && !strings.Contains(v, ".") {
			continue
		}
		t, err := time.ParseInLocation(l.layout, v, time.UTC)
		if err == nil {
			t = t.Truncate(time.Microsecond)
			return t, l.next(t), nil
		}
	}
	return time.Time{}, time.Time{}, fmt.Errorf("%q is not a FHIR date or dateTime", v)
}

// search answers GET /fhir/AuditEvent: a searchset Bundle, newest first unless _sort=date,
// paged by keyset with a next link.
func (r *Recorder) search(c echo.Context) error {
	if err := checkFormat(c); err != nil {
		return err
	}
	params := c.QueryParams()
	q, err := parseSearch(params)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	base := r.baseURL(c)
	b := bundle{ResourceType: "Bundle", Type: "searchset",
		Link: []bundleLink{{Relation: "self", URL: base + "/AuditEvent" + encodeQuery(params)}}}
	if q.total {
		n, err := r.count(ctx, q)
		if err != nil {
			return err
		}
		b.Total = &n
	}
	where := slices.Clone(q.where)
	order := "recorded DESC, id DESC"
	if q.after != nil {
		op := "<"
		if q.asc {
			op = ">"
		}
		where = append(where, "(recorded, id) "+op+" ("+q.arg(q.after.recorded)+", "+q.arg(q.after.id)+")")
	}
	if q.asc {
		order = "recorded, id"
	}
	sql := "SELECT id, recorded, event::text FROM audit_event"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY " + order + " LIMIT " + q.arg(q.count+1)
	rows, err := r.db.Query(ctx, sql, q.args...)
	if err != nil {
		return fmt.Errorf("searching audit events: %w", err)
	}
	defer rows.Close()
	var last cursor
	more := false
	for rows.Next() {
		if len(b.Entry) == q.count {
			more = true
			break
		}
		var body []byte
		if err := rows.Scan(&last.id, &last.recorded, &body); err != nil {
			return fmt.Errorf("searching audit events: %w", err)
		}
		var ev Event
		if err := json.Unmarshal(body, &ev); err != nil {
			return fmt.Errorf("decoding an audit event: %w", err)
		}
		entry := bundleEntry{FullURL: base + "/AuditEvent/" + ev.ID, Resource: render(ev)}
		entry.Search.Mode = "match"
		b.Entry = append(b.Entry, entry)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("searching audit events: %w", err)
	}
	if more {
		next := url.Values{}
		for k, v := range params {
			if k != "_cursor" {
				next[k] = v
			}
		}
		next.Set("_cursor", last.String())
		b.Link = append(b.Link, bundleLink{Relation: "next", URL: base + "/AuditEvent" + encodeQuery(next)})
	}
	return writeFHIR(c, b)
}

func (r *Recorder) count(ctx context.Context, q *query) (int64, error) {
	sql := "SELECT count(*) FROM audit_event"
	if len(q.where) > 0 {
		sql += " WHERE " + strings.Join(q.where, " AND ")
	}
	var n int64
	if err := r.db.QueryRow(ctx, sql, q.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting audit events: %w", err)
	}
	return n, nil
}

func encodeQuery(v url.Values) string {
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

func (r *Recorder) baseURL(c echo.Context) string {
	if r.cfg.BaseURL != "" {
		return strings.TrimSuffix(r.cfg.BaseURL, "/")
	}
	return c.Scheme() + "://" + c.Request().Host + "/fhir"
}

// checkFormat refuses a _format other than JSON: the trail is served as FHIR JSON only.
func checkFormat(c echo.Context) error {
	f := strings.ToLower(strings.TrimSpace(c.QueryParam("_format")))
	switch f {
	case "", "json", "application/json", "application/fhir+json", "application/json+fhir":
		return nil
	}
	if mediaType, _, ok := strings.Cut(f, ";"); ok && (mediaType == "application/fhir+json" || mediaType == "application/json") {
		return nil
	}
	return fhir.NewOutcome(http.StatusNotAcceptable, fhir.NotSupported, "_format="+f+" is not supported: AuditEvents are served as FHIR JSON only")
}

// writeFHIR sends v as FHIR JSON, never to be cached: the trail names who saw which patient.
func writeFHIR(c echo.Context, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding an AuditEvent response: %w", err)
	}
	if fhir.Pretty(c) {
		var buf bytes.Buffer
		if json.Indent(&buf, body, "", "  ") == nil {
			body = buf.Bytes()
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, fhir.ContentType, body)
}
