package followup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	ics "github.com/arran4/golang-ical"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/csvx"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/httpx"
)

// Register adds the coordinators' endpoints: GET /worklist (JSON, CSV or iCalendar by Accept
// or _format), GET /worklist.ics (iCalendar, for calendar apps, which subscribe to a URL) and
// GET /follow-up/Patient/:id (Status). limit, when not nil, narrows every work list to the
// sites the request's principal may see; match finds patients and sites by identifier (nil:
// by id and name only).
func (s *Tracker) Register(e *echo.Echo, db fhir.DBTX, now func() time.Time, limit SiteLimit, match Matcher) {
	w := s.Worklist(db, now)
	w.limit, w.match = limit, match
	methods := []string{http.MethodGet, http.MethodHead}
	e.Match(methods, "/worklist", w.get)
	e.Match(methods, "/worklist.ics", w.getCalendar)
	e.GET("/follow-up/Patient/:id", w.getStatus)
}

// formatTypes are the work list's formats by media type.
var formatTypes = map[string]string{
	"application/json": formatJSON, "application/fhir+json": formatJSON, "text/csv": formatCSV, "text/calendar": formatCalendar,
}

// offeredTypes are formatTypes' keys, JSON first: what a client that asks for anything gets.
var offeredTypes = []string{"application/json", "application/fhir+json", "text/csv", "text/calendar"}

// negotiateFormat picks the format from the Accept header: the offered type it wants most
// (httpx.Preferred), JSON when it wants none of them.
func negotiateFormat(accept string) string {
	if f, ok := formatTypes[httpx.Preferred(accept, offeredTypes...)]; ok {
		return f
	}
	return formatJSON
}

func (w *Worklist) get(c echo.Context) error {
	q, format, err := w.query(c)
	if err != nil {
		return err
	}
	if format == "" {
		format = negotiateFormat(c.Request().Header.Get(echo.HeaderAccept))
	}
	return w.serve(c, q, format)
}

func (w *Worklist) getCalendar(c echo.Context) error {
	q, format, err := w.query(c)
	if err != nil {
		return err
	}
	if format != "" && format != formatCalendar {
		return badParam("_format", "_format=%s on /worklist.ics: use /worklist for other formats", c.QueryParam("_format"))
	}
	return w.serve(c, q, formatCalendar)
}

// query is the request's work list query, narrowed to the sites its principal may see.
func (w *Worklist) query(c echo.Context) (Query, string, error) {
	q, format, err := ParseQuery(c.QueryParams())
	if err != nil {
		return q, format, err
	}
	var sites []string
	var limited bool
	if w.limit != nil {
		sites, limited = w.limit(c.Request().Context())
	}
	if err := w.Resolve(c.Request().Context(), &q, sites, limited); err != nil {
		return q, format, err
	}
	if limited {
		limitSites(&q, sites)
	}
	return q, format, nil
}

func (w *Worklist) serve(c echo.Context, q Query, format string) error {
	rep, err := w.List(c.Request().Context(), q)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	var contentType, disposition string
	switch format {
	case formatCSV:
		contentType, disposition = "text/csv; charset=utf-8", `attachment; filename="worklist.csv"`
		cw := csvx.NewSpreadsheetWriter(&buf)
		if err := cw.WriteAll(rep.CSV(q.IDs)); err != nil {
			return fmt.Errorf("writing the work list as CSV: %w", err)
		}
	case formatCalendar:
		contentType, disposition = "text/calendar; charset=utf-8", `inline; filename="worklist.ics"`
		if err := rep.Calendar(calendarName(q)).SerializeTo(&buf, ics.WithNewLineWindows); err != nil {
			return fmt.Errorf("writing the work list as iCalendar: %w", err)
		}
	default:
		contentType = echo.MIMEApplicationJSON
		enc := json.NewEncoder(&buf)
		if fhir.Pretty(c) {
			enc.SetIndent("", "  ")
		}
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("writing the work list as JSON: %w", err)
		}
	}
	// Calendar apps poll a subscription: an unchanged list costs them a 304.
	sum := sha256.Sum256(buf.Bytes())
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, contentType)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, no-cache") // patients' names: never in a shared cache
	h.Add(echo.HeaderVary, echo.HeaderAccept)
	if disposition != "" {
		h.Set(echo.HeaderContentDisposition, disposition)
	}
	if match := c.Request().Header.Get("If-None-Match"); match != "" && strings.Contains(match, etag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, contentType, buf.Bytes())
}
