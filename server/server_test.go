package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testConfig() Config {
	return Config{
		Addr: "127.0.0.1:0", MaxBodySize: "1K",
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: 10 * time.Second, ShutdownTimeout: 10 * time.Second,
	}
}

// syncBuffer collects log output written from the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running starts s on a loopback port and returns its base URL; it is shut down at cleanup.
func running(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func newServer(t *testing.T, db *pgxpool.Pool) (*Server, *syncBuffer) {
	logs := &syncBuffer{}
	return New(testConfig(), slog.New(slog.NewJSONHandler(logs, nil)), db), logs
}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	return do(t, http.MethodGet, url, nil)
}

func do(t *testing.T, method, url string, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

type outcome struct {
	ResourceType string
	Issue        []struct{ Severity, Code, Diagnostics string }
}

func decodeOutcome(t *testing.T, header http.Header, body []byte) outcome {
	t.Helper()
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Fatalf("Content-Type = %q, want application/fhir+json", ct)
	}
	var o outcome
	if err := json.Unmarshal(body, &o); err != nil || o.ResourceType != "OperationOutcome" || len(o.Issue) == 0 {
		t.Fatalf("not an OperationOutcome (%v): %s", err, body)
	}
	return o
}

func TestHealthAndReadinessOnAMigratedDatabase(t *testing.T) {
	s, _ := newServer(t, pgtest.NewDatabase(t))
	base := running(t, s)

	if status, _, body := get(t, base+"/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz = %d %s", status, body)
	}
	status, _, body := get(t, base+"/readyz")
	if status != http.StatusOK || !strings.Contains(string(body), `"status":"ready"`) {
		t.Fatalf("/readyz = %d %s", status, body)
	}
	if status, _, _ := get(t, base+"/readyz/"); status != http.StatusOK {
		t.Fatalf("/readyz/ (trailing slash) = %d", status)
	}
}

func TestNotReadyWhileTheSchemaIsOutOfDate(t *testing.T) {
	db, err := pgxpool.New(context.Background(), pgtest.NewEmptyDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	s, _ := newServer(t, db)
	base := running(t, s)

	status, _, body := get(t, base+"/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "out of date") {
		t.Fatalf("/readyz = %d %s, want 503 naming the out-of-date schema", status, body)
	}
	if status, _, _ := get(t, base+"/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz = %d: liveness must not depend on the database", status)
	}
}

func TestNotReadyWhenTheDatabaseIsGone(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s, logs := newServer(t, db)
	base := running(t, s)
	db.Close()

	status, _, body := get(t, base+"/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "database unreachable") {
		t.Fatalf("/readyz = %d %s, want 503", status, body)
	}
	if !strings.Contains(logs.String(), "readiness: database unreachable") {
		t.Fatal("the cause was not logged for the operator")
	}
}

func TestErrorsAreOperationOutcomes(t *testing.T) {
	s, _ := newServer(t, pgtest.NewDatabase(t))
	s.Echo.POST("/echo", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "text/plain", b)
	})
	s.Echo.GET("/boom", func(c echo.Context) error { panic("secret internals") })
	base := running(t, s)

	cases := []struct {
		name, method, path string
		body               io.Reader
		status             int
		code               string
	}{
		{"unknown route", http.MethodGet, "/no/such/thing", nil, http.StatusNotFound, "not-found"},
		{"wrong method", http.MethodDelete, "/healthz", nil, http.StatusMethodNotAllowed, "not-supported"},
		{"body over the limit", http.MethodPost, "/echo", strings.NewReader(strings.Repeat("x", 2048)), http.StatusRequestEntityTooLarge, "too-costly"},
		{"panic in a handler", http.MethodGet, "/boom", nil, http.StatusInternalServerError, "exception"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, header, body := do(t, tc.method, base+tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("status = %d, want %d: %s", status, tc.status, body)
			}
			o := decodeOutcome(t, header, body)
			if o.Issue[0].Code != tc.code || o.Issue[0].Severity != "error" {
				t.Fatalf("issue = %+v, want code %s", o.Issue[0], tc.code)
			}
			if strings.Contains(string(body), "secret internals") {
				t.Fatal("a server fault leaked its internals to the client")
			}
		})
	}
	if status, _, body := do(t, http.MethodPost, base+"/echo", strings.NewReader("small")); status != http.StatusOK || string(body) != "small" {
		t.Fatalf("a body under the limit: %d %s", status, body)
	}
}

func TestRequestsAreLoggedWithTheirRequestID(t *testing.T) {
	s, logs := newServer(t, pgtest.NewDatabase(t))
	base := running(t, s)
	_, header, _ := get(t, base+"/no/such/thing?name=Alice")
	id := header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id on the response")
	}
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, id) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no request log line with id %s in:\n%s", id, logs.String())
	}
	if line["method"] != "GET" || line["path"] != "/no/such/thing" || line["status"] != float64(404) || line["latency"] == nil {
		t.Fatalf("request log line = %v", line)
	}
	if strings.Contains(logs.String(), "Alice") {
		t.Fatal("the query string, which can name a patient, was logged")
	}
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	s, _ := newServer(t, pgtest.NewDatabase(t))
	entered := make(chan struct{})
	s.Echo.GET("/slow", func(c echo.Context) error {
		close(entered)
		time.Sleep(500 * time.Millisecond)
		return c.String(http.StatusOK, "finished")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	type result struct {
		status int
		body   string
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- result{res.StatusCode, string(b)}
	}()
	<-entered
	cancel() // the stop signal arrives mid-request

	if r := <-got; r.status != http.StatusOK || r.body != "finished" {
		t.Fatalf("in-flight request = %d %q, want it to finish", r.status, r.body)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}

func TestConfigValidation(t *testing.T) {
	ok := testConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	bad := map[string]func(*Config){
		"address without port": func(c *Config) { c.Addr = "localhost" },
		"size without number":  func(c *Config) { c.MaxBodySize = "lots" },
		"zero timeout":         func(c *Config) { c.WriteTimeout = 0 },
	}
	for name, mutate := range bad {
		c := testConfig()
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
