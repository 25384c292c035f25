package bulk

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/httpx"
)

// Paths of the routes besides the kick-offs.
const (
	PathStatus = "/fhir/$export-status/:job"
	PathFile   = "/fhir/$export-file/:job/:file"
)

// Register mounts the kick-offs, the status URL and the file downloads on e.
func (x *Exporter) Register(e *echo.Echo) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		e.Add(method, "/fhir/$export", x.kickOff(levelSystem))
		e.Add(method, "/fhir/Patient/$export", x.kickOff(levelPatient))
		e.Add(method, "/fhir/Group/:id/$export", x.kickOff(levelGroup))
	}
	e.GET(PathStatus, x.status)
	e.DELETE(PathStatus, x.deleteJob)
	e.GET(PathFile, x.download)
}

// ownJob loads the job the URL names, if the principal started it (or is an administrator):
// anyone else's is as unknown as a job that does not exist.
func (x *Exporter) ownJob(c echo.Context) (*job, error) {
	id := c.Param("job")
	notFound := outcome(http.StatusNotFound, fhir.NotFound, "", "export job %q is not known (finished jobs expire; a deleted one is gone)", id)
	if !validJobID(id) {
		return nil, notFound
	}
	p, ok := auth.FromContext(c.Request().Context())
	if !ok {
		return nil, notFound
	}
	j, err := x.loadJob(c.Request().Context(), x.db, id)
	if errors.Is(err, errNoJob) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if j.Principal != principalKey(p) && p.Role != auth.RoleAdmin {
		return nil, notFound
	}
	if !x.now().Before(j.ExpiresAt) && j.State != stateAccepted && j.State != stateInProgress {
		return nil, notFound // expired; the sweep will delete it
	}
	return j, nil
}

// manifestFile is one entry of the manifest's output or error lists.
type manifestFile struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int64  `json:"count"`
}

// manifest is the completed job's answer, as Bulk Data v2 defines it.
type manifest struct {
	TransactionTime     string         `json:"transactionTime"`
	Request             string         `json:"request"`
	RequiresAccessToken bool           `json:"requiresAccessToken"`
	Output              []manifestFile `json:"output"`
	Error               []manifestFile `json:"error"`
}

// status answers a poll: 202 with X-Progress and Retry-After while the job runs, 200 and the
// manifest when it is done, and the job's OperationOutcome (500) if it failed.
func (x *Exporter) status(c echo.Context) error {
	j, err := x.ownJob(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	files, err := x.loadFiles(ctx, x.db, j.ID)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	switch j.State {
	case stateAccepted, stateInProgress:
		done := 0
		var written int64
		for _, f := range files {
			if f.Kind == "output" {
				written += f.Count
				if f.Done {
					done++
				}
			}
		}
		h.Set("X-Progress", fmt.Sprintf("%s: %d of %d types, %d resources", j.State, done, len(j.Params.Types), written))
		h.Set("Retry-After", strconv.Itoa(max(1, int(x.cfg.Poll/time.Second))))
		return c.NoContent(http.StatusAccepted)
	case stateFailed:
		msg := "the export failed"
		if j.Error != nil {
			msg += ": " + *j.Error
		}
		return fhir.NewOutcome(http.StatusInternalServerError, fhir.Exception, msg)
	}
	m := manifest{TransactionTime: j.TransactionTime.UTC().Format(time.RFC3339Nano), Request: j.Request,
		RequiresAccessToken: true, Output: []manifestFile{}, Error: []manifestFile{}}
	for _, f := range files {
		if f.Count == 0 {
			continue
		}
		mf := manifestFile{Type: f.Type, URL: j.Base + "/$export-file/" + j.ID + "/" + f.Name, Count: f.Count}
		if f.Kind == "error" {
			mf.Type = "OperationOutcome"
			m.Error = append(m.Error, mf)
		} else {
			m.Output = append(m.Output, mf)
		}
	}
	h.Set("Expires", j.ExpiresAt.UTC().Format(http.TimeFormat))
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, raw)
}

// deleteJob answers DELETE of the status URL: the job and its files are gone (a worker running
// it stops at its next page).
func (x *Exporter) deleteJob(c echo.Context) error {
	j, err := x.ownJob(c)
	if err != nil {
		return err
	}
	if err := x.remove(c.Request().Context(), j.ID); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

// remove deletes a job's row, then its files.
func (x *Exporter) remove(ctx context.Context, id string) error {
	if _, err := x.db.Exec(ctx, `DELETE FROM bulk_export_job WHERE id = $1`, id); err != nil {
		return fmt.Errorf("deleting export %s: %w", id, err)
	}
	// The job is gone for the client either way; files left behind are the sweep's.
	if err := os.RemoveAll(x.jobDir(id)); err != nil {
		x.logger.Error("deleting an export's files", "job", id, "error", err)
	}
	return nil
}

// download streams one of a completed job's files from disk, gzipped when the client accepts
// it.
func (x *Exporter) download(c echo.Context) error {
	j, err := x.ownJob(c)
	if err != nil {
		return err
	}
	name := c.Param("file")
	missing := outcome(http.StatusNotFound, fhir.NotFound, "", "export %s has no file %q", j.ID, name)
	if j.State != stateCompleted || !validFileName(name) {
		return missing
	}
	files, err := x.loadFiles(c.Request().Context(), x.db, j.ID)
	if err != nil {
		return err
	}
	var size int64 = -1
	for _, f := range files {
		if f.Name == name && f.Count > 0 {
			size = f.Bytes
		}
	}
	if size < 0 {
		return missing
	}
	fd, err := os.Open(filepath.Join(x.jobDir(j.ID), name))
	if errors.Is(err, os.ErrNotExist) {
		return missing
	}
	if err != nil {
		return fmt.Errorf("opening an export file: %w", err)
	}
	defer fd.Close()
	body := io.LimitReader(fd, size) // what the job recorded, never a page written after
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/fhir+ndjson")
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept-Encoding")
	if acceptsGzip(c.Request().Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		c.Response().WriteHeader(http.StatusOK)
		zw := gzip.NewWriter(c.Response())
		if _, err := io.Copy(zw, body); err != nil {
			return nil // the client went away mid-file; nothing more can be said to it
		}
		return zw.Close()
	}
	h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	c.Response().WriteHeader(http.StatusOK)
	_, _ = io.Copy(c.Response(), body)
	return nil
}

// acceptsGzip reads Accept-Encoding as Accept is read: gzip unless q=0 refuses it.
func acceptsGzip(header string) bool {
	if header == "" {
		return false
	}
	// An Accept-Encoding list has Accept's shape; gzip/x stands in for gzip so the media-type
	// matcher can weigh q-values and "*".
	var ranges []string
	for _, part := range strings.Split(header, ",") {
		name, rest, _ := strings.Cut(strings.TrimSpace(part), ";")
		if name == "*" {
			name = "*/*"
		} else {
			name += "/x"
		}
		if rest != "" {
			name += ";" + rest
		}
		ranges = append(ranges, name)
	}
	return httpx.Preferred(strings.Join(ranges, ","), "gzip/x") != ""
}
