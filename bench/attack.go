package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The attack soak (`make soak`, `bench -attack 60s`) sends every attack of issue 15 at one
// `cartreg serve` at once, for a bounded time, while it samples the server's resident set.
// It stops by itself: each attack is one client sending requests one after another, each
// request bounded by attackTimeout, for at most the soak's duration and attackMaxRequests
// requests. It reports, per attack, the statuses it got, and fails when the server answered
// any 5xx or its RSS reached the limit. A server that grows past the kill limit is killed,
// so a regression cannot take the machine down with it.

// attackTimeout bounds one request: an attack the server does not bound shows as a timeout.
const attackTimeout = 30 * time.Second

// attackMaxRequests bounds each attack's requests, whatever the duration.
const attackMaxRequests = 5000

// attack is one kind of hostile request. setup runs once before the clock starts; send sends
// one request and returns its status.
type attack struct {
	name  string
	setup func(ctx context.Context, a *attacker) error
	send  func(ctx context.Context, a *attacker, n int) (int, error)
}

// attacker is what the attacks share: the server, a token and a loopback webhook receiver.
type attacker struct {
	base    string
	creds   *credentials
	http    *http.Client
	webhook string
}

// AttackResult is what one attack got back.
type AttackResult struct {
	Name     string         `json:"name"`
	Requests int            `json:"requests"`
	Statuses map[string]int `json:"statuses"` // "201", "400", "timeout", "error"
	Slowest  float64        `json:"slowest_seconds"`
	Errors   []string       `json:"errors,omitempty"` // the first few transport errors
}

// SoakResult is the whole soak's.
type SoakResult struct {
	Seconds     float64        `json:"seconds"`
	PeakRSSMB   float64        `json:"peak_rss_mb"`
	LimitRSSMB  float64        `json:"limit_rss_mb"`
	Killed      bool           `json:"killed"`
	Exited      bool           `json:"exited"` // the server stopped during the soak`
	Attacks     []AttackResult `json:"attacks"`
	ServerFault int            `json:"server_faults"` // 5xx answers
}

// Failed says why the soak failed, or "".
func (r *SoakResult) Failed() string {
	var why []string
	if r.Exited && !r.Killed {
		why = append(why, "the server exited during the soak")
	}
	if r.Killed {
		why = append(why, fmt.Sprintf("the server passed the kill limit and was killed (peak %.0f MB)", r.PeakRSSMB))
	} else if r.PeakRSSMB >= r.LimitRSSMB {
		why = append(why, fmt.Sprintf("peak RSS %.0f MB ≥ %.0f MB", r.PeakRSSMB, r.LimitRSSMB))
	}
	if r.ServerFault > 0 {
		why = append(why, fmt.Sprintf("%d answers were 5xx", r.ServerFault))
	}
	return strings.Join(why, "; ")
}

type soakOptions struct {
	bin        string
	duration   time.Duration
	work       string
	limitRSS   float64 // MB: at or over it the soak fails
	killRSS    float64 // MB: over it the server is killed
	serverArgs []string
}

// soak runs the attack soak against a new server.
func soak(ctx context.Context, o soakOptions) (*SoakResult, error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return nil, err
	}
	work := o.work
	if work == "" {
		if work, err = os.MkdirTemp("", "cartreg-soak-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	if err := os.Chmod(work, 0o755); err != nil { // the embedded database may run as another user
		return nil, err
	}
	dataDir := filepath.Join(work, "data")
	srv, err := startServer(ctx, bin, dataDir, filepath.Join(work, "serve.log"), o.serverArgs)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	creds, err := registerClient(ctx, bin, dataDir, srv.base)
	if err != nil {
		return nil, err
	}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer hook.Close()
	a := &attacker{base: srv.base, creds: creds, webhook: hook.URL,
		http: &http.Client{Timeout: attackTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}

	attacks := attacks()
	for _, at := range attacks {
		if at.setup == nil {
			continue
		}
		step("soak: setting up %s", at.name)
		if err := at.setup(ctx, a); err != nil {
			return nil, fmt.Errorf("setting up %s: %w", at.name, err)
		}
	}

	res := &SoakResult{LimitRSSMB: o.limitRSS}
	step("soak: %d attacks at once for %s (RSS limit %.0f MB, kill at %.0f MB)", len(attacks), o.duration, o.limitRSS, o.killRSS)
	stop, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	// The sampler outlives the duration: it watches until the last request has finished.
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			rss, err := srv.rssMB()
			if err == nil {
				res.PeakRSSMB = max(res.PeakRSSMB, rss)
				if rss > o.killRSS && !res.Killed {
					step("soak: the server's RSS is %.0f MB, over the kill limit: killing it", rss)
					res.Killed = true
					srv.cmd.Process.Signal(syscall.SIGKILL)
				}
			}
			select {
			case <-sampling.Done():
				return
			case <-srv.exited:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	results := make([]AttackResult, len(attacks))
	var wg sync.WaitGroup
	for i, at := range attacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runAttack(ctx, stop, a, at)
		}()
	}
	wg.Wait()
	stopSampling()
	<-sampled
	res.Seconds = time.Since(start).Seconds()
	if hwm, err := srv.peakRSSMB(); err == nil {
		res.PeakRSSMB = max(res.PeakRSSMB, hwm)
	}
	select {
	case <-srv.exited:
		res.Exited = true
	default:
	}
	res.Attacks = results
	for _, r := range results {
		for status, n := range r.Statuses {
			if code, err := strconv.Atoi(status); err == nil && code >= 500 {
				res.ServerFault += n
			}
		}
	}
	return res, nil
}

// runAttack sends one attack's requests one after another until stop ends; the request under
// way then finishes (within attackTimeout), so every request sent is counted.
func runAttack(ctx, stop context.Context, a *attacker, at attack) AttackResult {
	r := AttackResult{Name: at.name, Statuses: map[string]int{}}
	for n := 0; n < attackMaxRequests && stop.Err() == nil && ctx.Err() == nil; n++ {
		t0 := time.Now()
		status, err := at.send(ctx, a, n)
		r.Requests++
		r.Slowest = max(r.Slowest, time.Since(t0).Seconds())
		switch {
		case err == nil:
			r.Statuses[strconv.Itoa(status)]++
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			r.Statuses["timeout"]++
		default:
			r.Statuses["error"]++
			if len(r.Errors) < 3 {
				r.Errors = append(r.Errors, err.Error())
			}
			// A server that is gone answers every request at once: do not spin.
			select {
			case <-stop.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return r
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// do sends one request with the harness's token and returns its status, the body read and
// discarded so the connection is reused.
func (a *attacker) do(ctx context.Context, method, path, contentType string, body []byte) (int, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	token, err := a.creds.bearer(ctx)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

func (a *attacker) mustDo(ctx context.Context, method, path string, body any, want ...int) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	status, err := a.do(ctx, method, path, "application/fhir+json", raw)
	if err != nil {
		return err
	}
	for _, w := range want {
		if status == w {
			return nil
		}
	}
	return fmt.Errorf("%s %s: status %d, want %v", method, path, status, want)
}

// raw sends request bytes on a connection of its own, as no well-behaved client would, and
// returns the status of the answer.
func (a *attacker) raw(ctx context.Context, request string) (int, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(a.base, "http://"))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(attackTimeout))
	if _, err := io.WriteString(conn, request); err != nil {
		return 0, err
	}
	conn.(*net.TCPConn).CloseWrite()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// repeat is n copies of item joined by sep.
func repeat(n int, sep string, item func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = item(i)
	}
	return strings.Join(parts, sep)
}

func attacks() []attack {
	const orgs = 50
	return []attack{
		{name: "JSON Patch amplification (17 copies of /name)",
			setup: func(ctx context.Context, a *attacker) error {
				return a.mustDo(ctx, http.MethodPut, "/fhir/Patient/soak-patch", map[string]any{
					"resourceType": "Patient", "id": "soak-patch", "name": []any{map[string]any{"family": "Soak", "given": []string{"Patch"}}}}, 200, 201)
			},
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				ops := "[" + repeat(17, ",", func(int) string { return `{"op":"copy","from":"/name","path":"/name/-"}` }) + "]"
				return a.do(ctx, http.MethodPatch, "/fhir/Patient/soak-patch", "application/json-patch+json", []byte(ops))
			}},
		{name: "chain of depth 10 over a cycle of 50 Organizations",
			setup: func(ctx context.Context, a *attacker) error {
				for i := range orgs {
					org := map[string]any{"resourceType": "Organization", "id": fmt.Sprintf("soak-org-%d", i), "name": fmt.Sprintf("Soak %d", i),
						"partOf": map[string]any{"reference": fmt.Sprintf("Organization/soak-org-%d", (i+1)%orgs)}}
					// The first ones refer to some not yet written: without referential
					// integrity in a plain PUT, that is allowed.
					if err := a.mustDo(ctx, http.MethodPut, fmt.Sprintf("/fhir/Organization/soak-org-%d", i), org, 200, 201); err != nil {
						return err
					}
				}
				return nil
			},
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				return a.do(ctx, http.MethodGet, "/fhir/Organization?"+strings.Repeat("partof.", 10)+"name=x"+strconv.Itoa(n), "", nil)
			}},
		{name: "_has nested 10 deep",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				return a.do(ctx, http.MethodGet, "/fhir/Organization?"+strings.Repeat("_has:Organization:partof:", 10)+"name=x"+strconv.Itoa(n), "", nil)
			}},
		{name: "200 repeated name= parameters",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				return a.do(ctx, http.MethodGet, "/fhir/Patient?"+repeat(200, "&", func(i int) string { return fmt.Sprintf("name=s%d", i) }), "", nil)
			}},
		{name: "_sort with 200 keys",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				keys := []string{"name", "-birthdate", "family", "-given", "gender", "_lastUpdated", "-address", "identifier"}
				return a.do(ctx, http.MethodGet, "/fhir/Patient?_sort="+repeat(200, ",", func(i int) string { return keys[i%len(keys)] }), "", nil)
			}},
		{name: "Patient with 100,000 identifiers",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				body := `{"resourceType":"Patient","identifier":[` +
					repeat(100_000, ",", func(i int) string { return fmt.Sprintf(`{"system":"urn:soak","value":"%d-%d"}`, n, i) }) + `]}`
				return a.do(ctx, http.MethodPost, "/fhir/Patient", "application/fhir+json", []byte(body))
			}},
		{name: "10 MB Patient",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				// 40,000 names of about 250 bytes: many small elements, as real bulk data is.
				body := `{"resourceType":"Patient","name":[` + repeat(40_000, ",", func(i int) string {
					return fmt.Sprintf(`{"family":"Family%07d%s","given":["Given%07d","%s"]}`, i, strings.Repeat("f", 100), i, strings.Repeat("g", 100))
				}) + `]}`
				return a.do(ctx, http.MethodPost, "/fhir/Patient", "application/fhir+json", []byte(body))
			}},
		{name: "10,000-character family name",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				body := fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":"%s"}]}`, incompressible(10_000, n))
				return a.do(ctx, http.MethodPost, "/fhir/Patient", "application/fhir+json", []byte(body))
			}},
		{name: "Subscription with a CR/LF header, then a matching write",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				if n%2 == 1 { // every other request a write its criteria match
					return a.do(ctx, http.MethodPost, "/fhir/Patient", "application/fhir+json",
						[]byte(`{"resourceType":"Patient","name":[{"family":"Soakhook"}]}`))
				}
				sub := map[string]any{"resourceType": "Subscription", "status": "requested", "reason": "soak",
					"criteria": "Patient?family=soakhook",
					"channel": map[string]any{"type": "rest-hook", "endpoint": a.webhook, "payload": "application/fhir+json",
						"header": []string{"X-Soak: a\r\nX-Injected: b"}}}
				raw, _ := json.Marshal(sub)
				return a.do(ctx, http.MethodPost, "/fhir/Subscription", "application/fhir+json", raw)
			}},
		{name: "malformed chunked bodies",
			send: func(ctx context.Context, a *attacker, n int) (int, error) {
				token, err := a.creds.bearer(ctx)
				if err != nil {
					return 0, err
				}
				bodies := []string{"zz\r\n{}\r\n0\r\n\r\n", "40\r\n{\"resourceType\":", "5\r\n{\"a\":XX\r\n0\r\n\r\n"}
				return a.raw(ctx, "POST /fhir/Patient HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer "+token+
					"\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"+bodies[n%len(bodies)])
			}},
	}
}

// incompressible is n letters that PostgreSQL cannot compress below its btree row limit, as
// a real long value would not compress (a run of one letter would), different for each seed.
func incompressible(n, seed int) string {
	b := make([]byte, n)
	x := uint64(seed)*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = "abcdefghijklmnopqrstuvwxyz"[x%26]
	}
	return string(b)
}

// rssMB is the server process's resident set now (VmRSS), in MB.
func (s *server) rssMB() (float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// printSoak writes the soak's report.
func printSoak(w io.Writer, r *SoakResult) {
	fmt.Fprintf(w, "attack soak: %.0f s, server peak RSS %.0f MB (limit %.0f MB)\n\n", r.Seconds, r.PeakRSSMB, r.LimitRSSMB)
	fmt.Fprintf(w, "| attack | requests | answers | slowest |\n|---|---|---|---|\n")
	for _, a := range r.Attacks {
		keys := make([]string, 0, len(a.Statuses))
		for k := range a.Statuses {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s×%d", k, a.Statuses[k]))
		}
		fmt.Fprintf(w, "| %s | %d | %s | %.1f s |\n", a.Name, a.Requests, strings.Join(parts, " "), a.Slowest)
	}
	for _, a := range r.Attacks {
		for _, e := range a.Errors {
			fmt.Fprintf(w, "%s: %s\n", a.Name, e)
		}
	}
	if why := r.Failed(); why != "" {
		fmt.Fprintf(w, "\nFAIL: %s\n", why)
	} else {
		fmt.Fprintf(w, "\nPASS: no 5xx, peak RSS under the limit\n")
	}
}

func writeSoakJSON(path string, r *SoakResult) error {
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}
