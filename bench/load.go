package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// The concurrency of each phase, as issue 7 sets it.
const (
	ingestClients  = 8
	smallTxClients = 32
	readClients    = 32
)

// client sends requests to the server over keep-alive connections, one per concurrent client.
type client struct {
	base  string
	http  *http.Client
	creds *credentials
}

func newClient(base string, conns int, creds *credentials) *client {
	t := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute}
	return &client{base: base, http: &http.Client{Transport: t, Timeout: 5 * time.Minute}, creds: creds}
}

// do sends one request and reads the whole answer; a status other than want is an error.
func (c *client) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	req.Header.Set("Accept", "application/fhir+json")
	token, err := c.creds.bearer(ctx)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %s, want %d: %.500s", method, redactQuery(path), resp.Status, want, out)
	}
	return out, nil
}

// redactQuery keeps search values (names, birth dates) out of error messages.
func redactQuery(path string) string {
	p, _, _ := strings.Cut(path, "?")
	return p
}

// Rate is a throughput phase: how many operations in how long, and their latencies.
type Rate struct {
	Clients    int     `json:"clients"`
	Operations int     `json:"operations"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
	MedianMS   float64 `json:"median_ms"`
	P95MS      float64 `json:"p95_ms"`
	P99MS      float64 `json:"p99_ms"`
}

// Ingest is the ingest phase: Bundles posted, and resources they created.
type Ingest struct {
	Rate
	Resources          int     `json:"resources"`
	ResourcesPerSecond float64 `json:"resources_per_second"`
}

// latencies collects durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// rate summarises n operations over elapsed.
func (l *latencies) rate(clients int, elapsed time.Duration) Rate {
	q := quantiles(l.d)
	return Rate{Clients: clients, Operations: len(l.d), Seconds: elapsed.Seconds(),
		PerSecond: float64(len(l.d)) / elapsed.Seconds(), MedianMS: q(0.50), P95MS: q(0.95), P99MS: q(0.99)}
}

// quantiles sorts d and returns its quantile function in milliseconds (nearest rank).
func quantiles(d []time.Duration) func(p float64) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return func(p float64) float64 {
		if len(d) == 0 {
			return 0
		}
		i := int(p*float64(len(d))+0.5) - 1
		i = max(0, min(i, len(d)-1))
		return float64(d[i].Microseconds()) / 1000
	}
}

func listCohort(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "patient-*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no patient Bundles in %s", dir)
	}
	sort.Strings(files)
	return files, nil
}

// sample is one ingested patient the searches look for: its server id, name and birth date,
// and the date of its first remission assessment.
type sample struct {
	patientID, family, birthDate, firstAssessment string
}

type loaded struct {
	figures   Ingest
	locations []string // Type/id of every resource created
	samples   []sample
}

// sampleEvery is the spread of the search samples: every how many of n Bundles one is taken,
// about 1,000 in all.
func sampleEvery(n int) int { return max(1, n/1000) }

// ingest posts every Bundle of the cohort from ingestClients clients. About 1,000 patients,
// spread over the cohort, are kept as search samples: their Bundles are decoded to know what
// to search for.
func ingest(ctx context.Context, c *client, files []string) (*loaded, error) {
	every := sampleEvery(len(files))
	var (
		mu     sync.Mutex
		out    loaded
		lat    latencies
		next   = make(chan int)
		start  = time.Now()
		status = progress(len(files), "Bundles")
	)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for i := range files {
			select {
			case next <- i:
			case <-ctx.Done():
				return ctx.Err() // a worker failed (its error is the one Wait returns), or the run was stopped
			}
		}
		return nil
	})
	post := func(i int) (time.Duration, []string, *sample, error) {
		body, err := os.ReadFile(files[i])
		if err != nil {
			return 0, nil, nil, err
		}
		t0 := time.Now()
		raw, err := c.do(ctx, http.MethodPost, "/fhir/", body, http.StatusOK)
		took := time.Since(t0)
		if err != nil {
			return 0, nil, nil, err
		}
		resp, err := parseResponse(raw)
		if err != nil {
			return 0, nil, nil, err
		}
		var s *sample
		if i%every == 0 {
			s, err = sampleOf(body, resp)
		}
		return took, resp.created(), s, err
	}
	for w := 0; w < ingestClients; w++ {
		g.Go(func() error {
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for i := range next {
				took, locs, s, err := post(i)
				if err != nil {
					return fmt.Errorf("%s: %w", filepath.Base(files[i]), err)
				}
				mine = append(mine, took)
				mu.Lock()
				out.locations = append(out.locations, locs...)
				if s != nil {
					out.samples = append(out.samples, *s)
				}
				mu.Unlock()
				status()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	out.figures = Ingest{Rate: lat.rate(ingestClients, elapsed), Resources: len(out.locations)}
	out.figures.ResourcesPerSecond = float64(len(out.locations)) / elapsed.Seconds()
	return &out, nil
}

// progress returns a function to call once per item done; it prints a line every 10%.
func progress(total int, what string) func() {
	var mu sync.Mutex
	done, next := 0, total/10
	start := time.Now()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		done++
		if done == next {
			fmt.Fprintf(os.Stderr, "          %d of %d %s, %.0f/s\n", done, total, what, float64(done)/time.Since(start).Seconds())
			next += total / 10
		}
	}
}

type bundleResponse struct {
	Entry []struct {
		Response struct {
			Status   string `json:"status"`
			Location string `json:"location"`
		} `json:"response"`
	} `json:"entry"`
}

func parseResponse(raw []byte) (*bundleResponse, error) {
	var b bundleResponse
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("transaction response: %w", err)
	}
	return &b, nil
}

// created lists Type/id of each resource the transaction response says it created.
func (b *bundleResponse) created() []string {
	var locs []string
	for _, e := range b.Entry {
		if strings.HasPrefix(e.Response.Status, "201") {
			locs = append(locs, typeAndID(e.Response.Location))
		}
	}
	return locs
}

// typeAndID cuts Type/id out of a location: [base/]Type/id[/_history/v].
func typeAndID(loc string) string {
	loc, _, _ = strings.Cut(loc, "/_history/")
	parts := strings.Split(loc, "/")
	if len(parts) < 2 {
		return loc
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}

// sampleOf reads a patient's search sample from its Bundle and the server's response to it:
// entries of a transaction response are in the order of the request's.
func sampleOf(request []byte, resp *bundleResponse) (*sample, error) {
	var req struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(request, &req); err != nil {
		return nil, err
	}
	if len(resp.Entry) != len(req.Entry) {
		return nil, fmt.Errorf("the response has %d entries for %d", len(resp.Entry), len(req.Entry))
	}
	var s sample
	for i, e := range req.Entry {
		var r struct {
			ResourceType string          `json:"resourceType"`
			Name         json.RawMessage `json:"name"`
			BirthDate    string          `json:"birthDate"`
			Code         struct {
				Coding []struct{ System, Code string } `json:"coding"`
			} `json:"code"`
			Effective string `json:"effectiveDateTime"`
		}
		if err := json.Unmarshal(e.Resource, &r); err != nil {
			return nil, err
		}
		switch r.ResourceType {
		case "Patient":
			var names []struct {
				Family string `json:"family"`
			}
			if err := json.Unmarshal(r.Name, &names); err != nil || len(names) == 0 {
				return nil, fmt.Errorf("a Patient with no name")
			}
			s.patientID = strings.TrimPrefix(typeAndID(resp.Entry[i].Response.Location), "Patient/")
			s.family, s.birthDate = names[0].Family, r.BirthDate
		case "Observation":
			if s.firstAssessment == "" && len(r.Code.Coding) > 0 && r.Code.Coding[0].Code == assessmentCode && len(r.Effective) >= 10 {
				s.firstAssessment = r.Effective[:10]
			}
		}
	}
	if s.patientID == "" {
		return nil, fmt.Errorf("no Patient in the Bundle")
	}
	return &s, nil
}

// assessmentCode is LOINC's "Cancer disease progression", the code of the registry's
// remission assessments.
const assessmentCode = "97509-4"

// smallTransactions posts Bundles of one new Patient and one Observation about them from
// smallTxClients clients for d.
func smallTransactions(ctx context.Context, c *client, d time.Duration) (Rate, error) {
	return forDuration(ctx, smallTxClients, d, func(ctx context.Context, worker, n int, rng *rand.Rand) error {
		body := smallBundle(worker, n, rng)
		raw, err := c.do(ctx, http.MethodPost, "/fhir/", body, http.StatusOK)
		if err != nil {
			return err
		}
		resp, err := parseResponse(raw)
		if err != nil {
			return err
		}
		if n := len(resp.created()); n != 2 {
			return fmt.Errorf("a small transaction created %d resources, want 2", n)
		}
		return nil
	})
}

func smallBundle(worker, n int, rng *rand.Rand) []byte {
	id := fmt.Sprintf("bench-%02d-%07d", worker, n)
	patient := fmt.Sprintf("urn:uuid:%08x-0000-4000-8000-%012x", worker, n)
	b := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
{"fullUrl":%q,"resource":{"resourceType":"Patient",
 "identifier":[{"system":"http://cartreg.org/fhir/bench/patient","value":%q}],
 "name":[{"family":"Bench%d","given":["Small"]}],"gender":"female","birthDate":"19%02d-%02d-%02d"},
 "request":{"method":"POST","url":"Patient"}},
{"resource":{"resourceType":"Observation","status":"final",
 "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
 "code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body weight"}]},
 "subject":{"reference":%q},"effectiveDateTime":"2026-11-30T09:%02d:00Z",
 "valueQuantity":{"value":%d.%d,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}},
 "request":{"method":"POST","url":"Observation"}}]}`,
		patient, id, worker, 40+rng.IntN(50), 1+rng.IntN(12), 1+rng.IntN(28), patient, rng.IntN(60), 45+rng.IntN(60), rng.IntN(10))
	return []byte(b)
}

// reads reads resources created by the ingest, chosen at random, from clients clients.
func reads(ctx context.Context, c *client, locations []string, clients int, d time.Duration) (Rate, error) {
	if len(locations) == 0 {
		return Rate{}, fmt.Errorf("nothing to read: the ingest created no resources")
	}
	return forDuration(ctx, clients, d, func(ctx context.Context, _, _ int, rng *rand.Rand) error {
		_, err := c.do(ctx, http.MethodGet, "/fhir/"+locations[rng.IntN(len(locations))], nil, http.StatusOK)
		return err
	})
}

// forDuration runs op from clients goroutines until d has passed, and times each call.
func forDuration(ctx context.Context, clients int, d time.Duration, op func(ctx context.Context, worker, n int, rng *rand.Rand) error) (Rate, error) {
	var lat latencies
	start := time.Now()
	end := start.Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for w := 0; w < clients; w++ {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []time.Duration
			defer func() { lat.add(mine) }()
			for n := 0; time.Now().Before(end); n++ {
				t0 := time.Now()
				if err := op(ctx, w, n, rng); err != nil {
					return err
				}
				mine = append(mine, time.Since(t0))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Rate{}, err
	}
	return lat.rate(clients, time.Since(start)), nil
}

// Search is the latency of one kind of search, one query at a time.
type Search struct {
	Query       string  `json:"query"`
	Queries     int     `json:"queries"`
	MedianMS    float64 `json:"median_ms"`
	P95MS       float64 `json:"p95_ms"`
	MeanMatches float64 `json:"mean_matches"`
	// CPU per query, the server's and PostgreSQL's: unlike the latencies, it hardly moves with
	// the machine's other work, so it compares builds measured at different times.
	CPU CPU `json:"cpu"`
}

// searches runs each search n times, on samples taken in turn, one query at a time, and checks
// each finds the sampled patient's data: a search that matches nothing is not measured.
func searches(ctx context.Context, c *client, srv *server, samples []sample, n int) (obs, pat Search, err error) {
	var withAssessment []sample
	for _, s := range samples {
		if s.firstAssessment != "" {
			withAssessment = append(withAssessment, s)
		}
	}
	if len(withAssessment) == 0 {
		return obs, pat, fmt.Errorf("no sampled patient has a remission assessment")
	}
	obs, err = timeSearch(ctx, c, srv, n, "Observation?patient=…&code=http://loinc.org|"+assessmentCode+"&date=ge…", func(i int) (string, string) {
		s := withAssessment[i%len(withAssessment)]
		q := url.Values{"patient": {s.patientID}, "code": {"http://loinc.org|" + assessmentCode}, "date": {"ge" + s.firstAssessment}}
		return "/fhir/Observation?" + q.Encode(), ""
	})
	if err != nil {
		return obs, pat, err
	}
	pat, err = timeSearch(ctx, c, srv, n, "Patient?name=…&birthdate=…", func(i int) (string, string) {
		s := samples[i%len(samples)]
		q := url.Values{"name": {s.family}, "birthdate": {s.birthDate}}
		return "/fhir/Patient?" + q.Encode(), "Patient/" + s.patientID
	})
	return obs, pat, err
}

// timeSearch times n searches; query gives the i-th path and, if not empty, a resource the
// result must include.
func timeSearch(ctx context.Context, c *client, srv *server, n int, label string, query func(i int) (path, mustFind string)) (Search, error) {
	s := Search{Query: label, Queries: n}
	cpu, err := srv.cpuMeter()
	if err != nil {
		return s, err
	}
	d := make([]time.Duration, 0, n)
	matches := 0
	for i := 0; i < n; i++ {
		path, mustFind := query(i)
		t0 := time.Now()
		body, err := c.do(ctx, http.MethodGet, path, nil, http.StatusOK)
		if err != nil {
			return s, err
		}
		d = append(d, time.Since(t0))
		var b struct {
			Entry []struct {
				FullURL string `json:"fullUrl"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return s, err
		}
		if len(b.Entry) == 0 {
			return s, fmt.Errorf("%s found nothing for a sampled patient", redactQuery(path))
		}
		if mustFind != "" && !strings.Contains(string(body), `/`+mustFind+`"`) {
			return s, fmt.Errorf("%s did not find the sampled %s", redactQuery(path), mustFind)
		}
		matches += len(b.Entry)
	}
	if s.CPU, err = cpu(n); err != nil {
		return s, err
	}
	q := quantiles(d)
	s.MedianMS, s.P95MS, s.MeanMatches = q(0.5), q(0.95), float64(matches)/float64(n)
	return s, nil
}

// Outcome is the latency of one outcome query over the whole cohort.
type Outcome struct {
	Query    string  `json:"query"`
	Requests int     `json:"requests"`
	MedianMS float64 `json:"median_ms"`
}

// outcomeQueries are the researchers' questions timed: overall, and broken down.
var outcomeQueries = []string{
	"/registry/outcomes/response",
	"/registry/outcomes/response?group_by=product",
	"/registry/outcomes/survival",
	"/registry/outcomes/survival?group_by=disease",
	"/registry/outcomes/survival?endpoint=pfs&group_by=product",
}

func outcomes(ctx context.Context, c *client, n int) ([]Outcome, error) {
	var out []Outcome
	for _, q := range outcomeQueries {
		d := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if _, err := c.do(ctx, http.MethodGet, q, nil, http.StatusOK); err != nil {
				return nil, err
			}
			d = append(d, time.Since(t0))
		}
		out = append(out, Outcome{Query: q, Requests: n, MedianMS: quantiles(d)(0.5)})
	}
	return out, nil
}
