package fhir

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// bundle is a Bundle the server builds. Resources go in as the JSON bytes the store holds,
// so listing them costs no parsing or re-encoding.
type bundle struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id"`
	Meta         bundleMeta    `json:"meta"`
	Type         string        `json:"type"`
	Total        *int          `json:"total,omitempty"`
	Link         []bundleLink  `json:"link,omitempty"`
	Entry        []bundleEntry `json:"entry,omitempty"`
}

type bundleMeta struct {
	LastUpdated string `json:"lastUpdated"`
}

type bundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type bundleEntry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
	Search   *entrySearch    `json:"search,omitempty"`
	Request  *entryRequest   `json:"request,omitempty"`
	Response *entryResponse  `json:"response,omitempty"`
}

type entrySearch struct {
	Mode string `json:"mode"`
}

type entryRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}

type entryResponse struct {
	Status       string          `json:"status"`
	Location     string          `json:"location,omitempty"`
	Etag         string          `json:"etag,omitempty"`
	LastModified string          `json:"lastModified,omitempty"`
	Outcome      json.RawMessage `json:"outcome,omitempty"`
}

func newBundle(bundleType string, now time.Time) *bundle {
	return &bundle{ResourceType: "Bundle", ID: uuid.NewString(), Type: bundleType,
		Meta: bundleMeta{LastUpdated: now.UTC().Format("2006-01-02T15:04:05.000Z07:00")}}
}

func (b *bundle) send(c echo.Context) error {
	// No HTML escaping: links keep their & and narratives their <div>, as clients expect.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(b); err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, bytes.TrimRight(buf.Bytes(), "\n"))
}

// pageURL is the request's own URL on the FHIR base with query parameters changed: set
// replaces them, and an empty value removes one.
func pageURL(base string, c echo.Context, set map[string]string) string {
	q := url.Values{}
	for k, v := range c.QueryParams() {
		q[k] = append([]string(nil), v...)
	}
	if c.Request().Method == http.MethodPost { // POST _search: the form becomes the link's query
		if form, err := c.FormParams(); err == nil {
			for k, v := range form {
				q[k] = append(q[k], v...)
			}
		}
	}
	for k, v := range set {
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
	}
	path := c.Request().URL.Path
	if len(path) >= len("/fhir") {
		path = path[len("/fhir"):]
	}
	u := base + path
	if enc := q.Encode(); enc != "" {
		u += "?" + enc
	}
	return u
}

// history answers instance, type and system history.
func (a *API) history(c echo.Context) error {
	hq := HistoryQuery{}
	if c.Param("type") != "" {
		resourceType, id, err := target(c)
		if err != nil {
			return err
		}
		hq.Type, hq.ID = resourceType, id
	}
	q := c.QueryParams()
	var err error
	if hq.Count, err = parseCount(q.Get("_count"), a.config.DefaultCount, a.config.MaxCount); err != nil {
		return err
	}
	if s := q.Get("_since"); s != "" {
		if hq.Since, _, err = parseDateRange(s); err != nil {
			return err
		}
	}
	if s := q.Get("_at"); s != "" {
		if hq.AtLow, hq.AtHigh, err = parseDateRange(s); err != nil {
			return err
		}
	}
	if s := q.Get("_cursor"); s != "" {
		if hq.Before, err = strconv.ParseInt(s, 10, 64); err != nil || hq.Before < 1 {
			return NewOutcome(http.StatusBadRequest, Value, "_cursor is not one this server made")
		}
	}
	var entries []HistoryEntry
	var more bool
	ctx := c.Request().Context()
	err = a.search.readLimited(ctx, func(db Querier) error {
		entries, more, err = a.store.History(ctx, db, hq)
		return err
	})
	if err != nil {
		return err
	}
	base := a.baseURL(c)
	b := newBundle("history", a.now())
	b.Link = []bundleLink{{Relation: "self", URL: pageURL(base, c, nil)}}
	if more {
		b.Link = append(b.Link, bundleLink{Relation: "next", URL: pageURL(base, c, map[string]string{"_cursor": strconv.FormatInt(entries[len(entries)-1].Seq, 10)})})
	}
	for _, e := range entries {
		entry := bundleEntry{
			FullURL:  base + "/" + e.Path(),
			Response: &entryResponse{Etag: e.ETag(), LastModified: e.LastUpdated.UTC().Format(time.RFC3339Nano)},
		}
		switch {
		case e.Deleted:
			entry.Request = &entryRequest{Method: http.MethodDelete, URL: e.Path()}
			entry.Response.Status = "204 No Content"
		case e.VersionID == 1:
			entry.Request = &entryRequest{Method: http.MethodPost, URL: e.Type}
			entry.Response.Status = "201 Created"
			entry.Resource = e.JSON
		default:
			entry.Request = &entryRequest{Method: http.MethodPut, URL: e.Path()}
			entry.Response.Status = "200 OK"
			entry.Resource = e.JSON
		}
		b.Entry = append(b.Entry, entry)
	}
	return b.send(c)
}
