package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Export is the Bulk Data $export of the whole server: from kick-off to the manifest, then the
// download of every file, with the server's resident set sampled throughout.
type Export struct {
	Resources          int     `json:"resources"`
	Files              int     `json:"files"`
	Seconds            float64 `json:"seconds"` // kick-off to manifest
	ResourcesPerSecond float64 `json:"resources_per_second"`
	DownloadSeconds    float64 `json:"download_seconds"`
	PeakRSSMB          float64 `json:"peak_rss_mb"` // the server's largest VmRSS sampled meanwhile
}

// exportAll runs a system-level $export and downloads what it wrote, checking that every file
// has as many lines as the manifest says.
func exportAll(ctx context.Context, c *client, srv *server) (Export, error) {
	var res Export
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sampled := make(chan float64, 1)
	go func() {
		peak := 0.0
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if mb, err := srv.rssMB(); err == nil && mb > peak {
				peak = mb
			}
			select {
			case <-ctx.Done():
				sampled <- peak
				return
			case <-tick.C:
			}
		}
	}()

	t0 := time.Now()
	resp, err := c.send(ctx, http.MethodGet, c.base+"/fhir/$export", "Prefer", "respond-async")
	if err != nil {
		return res, err
	}
	resp.Body.Close()
	status := resp.Header.Get("Content-Location")
	if resp.StatusCode != http.StatusAccepted || status == "" {
		return res, fmt.Errorf("$export kick-off: %s, Content-Location %q", resp.Status, status)
	}
	var manifest struct {
		Output []struct {
			Type  string `json:"type"`
			URL   string `json:"url"`
			Count int    `json:"count"`
		} `json:"output"`
	}
	for {
		resp, err := c.send(ctx, http.MethodGet, status)
		if err != nil {
			return res, err
		}
		if resp.StatusCode == http.StatusAccepted {
			resp.Body.Close()
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		err = json.NewDecoder(resp.Body).Decode(&manifest)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return res, fmt.Errorf("$export status: %s (%v)", resp.Status, err)
		}
		break
	}
	res.Seconds = time.Since(t0).Seconds()

	t1 := time.Now()
	for _, f := range manifest.Output {
		n, err := c.countLines(ctx, f.URL)
		if err != nil {
			return res, err
		}
		if n != f.Count {
			return res, fmt.Errorf("$export file of %s: %d lines, the manifest says %d", f.Type, n, f.Count)
		}
		res.Resources += n
		res.Files++
	}
	res.DownloadSeconds = time.Since(t1).Seconds()
	res.ResourcesPerSecond = float64(res.Resources) / res.Seconds
	resp, err = c.send(ctx, http.MethodDelete, status)
	if err != nil {
		return res, err
	}
	resp.Body.Close()
	cancel()
	res.PeakRSSMB = <-sampled
	return res, nil
}

// send makes a request with the client's token and extra headers (name, value pairs); the
// caller closes the body.
func (c *client) send(ctx context.Context, method, url string, headers ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/fhir+json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	token, err := c.creds.bearer(ctx)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return c.http.Do(req)
}

// countLines downloads an NDJSON file as a stream and counts its lines.
func (c *client) countLines(ctx context.Context, url string) (int, error) {
	resp, err := c.send(ctx, http.MethodGet, url, "Accept", "application/fhir+ndjson")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(raw)))
	}
	n := 0
	r := bufio.NewReaderSize(resp.Body, 1<<20)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			n++
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
