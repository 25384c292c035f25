// Package apptest runs cartreg for tests as serve wires it (package app): on a throwaway
// database of the test's own, behind a real HTTP server, with a clock the test can set.
// Packages that use it call pgtest.Main from their TestMain.
package apptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/server"
)

// Harness is one cartreg under test.
type Harness struct {
	T   testing.TB
	DB  *pgxpool.Pool
	App *app.App
	// Echo is the server's router, with every route the app mounts.
	Echo *echo.Echo
	// URL is the server's root, e.g. http://127.0.0.1:41234; the FHIR base is URL + "/fhir".
	URL string
	// ReplicaURL is the read replica's URL of the test's database, with WithReadReplica.
	ReplicaURL string

	mu    sync.Mutex
	fixed time.Time // zero: the clock is the real time
	clock func() time.Time
	// admin is the token requests carry unless they name another: an administrator's, made
	// anew when the clock leaves its lifetime.
	tokenMu       sync.Mutex
	admin         string
	adminClient   string
	adminIssuedAt time.Time
	adminExpires  time.Time
}

// Option changes how a Harness is built.
type Option func(*options)

type options struct {
	db      *pgxpool.Pool
	config  func(*app.Config)
	clock   func() time.Time
	maxBody string
	replica bool
}

// WithReadReplica serves the registry's outcome queries from a hot standby of the test's
// database (pgtest.NewDatabaseWithReplica); the Harness's ReplicaURL names it.
func WithReadReplica() Option { return func(o *options) { o.replica = true } }

// WithConfig lets a test change the wiring's settings from the harness's defaults.
func WithConfig(change func(*app.Config)) Option { return func(o *options) { o.config = change } }

// WithClock gives the app a clock of the test's own instead of the harness's settable one.
func WithClock(clock func() time.Time) Option { return func(o *options) { o.clock = clock } }

// WithDatabase runs the harness on db, another harness's database, instead of a new one: a
// second replica, or the same server after a restart.
func WithDatabase(db *pgxpool.Pool) Option { return func(o *options) { o.db = db } }

// WithMaxBody sets the largest request body the server accepts (default 16M).
func WithMaxBody(size string) Option { return func(o *options) { o.maxBody = size } }

// DefaultConfig is the wiring's settings in tests: small pages, so paging is exercised.
func DefaultConfig() app.Config {
	return app.Config{
		FHIR: fhir.APIConfig{DefaultCount: 10, MaxCount: 500,
			Bundles: fhir.BundleConfig{MaxEntries: 5000, ReferentialIntegrity: true}},
		Registry: registry.Config{ReportCacheMB: 64},
		Jobs: app.JobsConfig{FollowUpSchedule: "off", Location: time.UTC,
			DeliveryInterval: time.Second, DeliveryRetention: time.Hour},
	}
}

// New starts cartreg on a new database and serves it until the test ends.
func New(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	o := options{maxBody: "16M"}
	for _, opt := range opts {
		opt(&o)
	}
	h := &Harness{T: t, DB: o.db}
	if o.replica {
		var primary string
		primary, h.ReplicaURL = pgtest.NewDatabaseWithReplica(t)
		pool, err := pgxpool.New(context.Background(), primary)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		h.DB = pool
	} else if h.DB == nil {
		h.DB = pgtest.NewDatabase(t)
	}
	h.clock = o.clock
	if h.clock == nil {
		h.clock = h.Now
	}
	// The server's address is known before cartreg is wired, so its token endpoint (the
	// audience of clients' assertions) is the one clients reach.
	ts := httptest.NewUnstartedServer(nil)
	h.URL = "http://" + ts.Listener.Addr().String()
	cfg := DefaultConfig()
	cfg.Auth.Issuer = h.URL
	cfg.ReadURL = h.ReplicaURL
	if o.config != nil {
		o.config(&cfg)
	}
	logger := Logger(t)
	a, err := app.New(context.Background(), cfg, h.DB, h.clock, logger)
	if err != nil {
		t.Fatalf("wiring cartreg: %v", err)
	}
	srv := server.New(server.Config{Addr: "127.0.0.1:0", MaxBodySize: o.maxBody, ReadHeaderTimeout: time.Minute,
		ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: time.Minute, ShutdownTimeout: time.Minute}, logger, h.DB)
	a.Routes(srv.Echo)
	ts.Config.Handler = srv.Echo
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		if err := a.Close(context.Background()); err != nil {
			t.Errorf("closing cartreg: %v", err)
		}
	})
	h.App, h.Echo = a, srv.Echo
	client, _, err := a.Auth.AddClient(context.Background(), auth.NewClient{Name: "test administrator", Role: auth.RoleAdmin, JWKS: clientKeys(t)})
	if err != nil {
		t.Fatalf("registering the test's administrator: %v", err)
	}
	h.adminClient = client.ID
	return h
}

// Token registers a client of role (limited to sites, for a coordinator) and returns an
// access token for it, issued at the harness's clock.
func (h *Harness) Token(role auth.Role, sites ...string) string {
	h.T.Helper()
	client, _, err := h.App.Auth.AddClient(context.Background(), auth.NewClient{Name: "test " + string(role), Role: role, Sites: sites, JWKS: clientKeys(h.T)})
	if err != nil {
		h.T.Fatalf("registering a %s client: %v", role, err)
	}
	tok, _, err := h.App.Auth.IssueToken(context.Background(), client.ID, "")
	if err != nil {
		h.T.Fatalf("issuing a %s token: %v", role, err)
	}
	return tok
}

// adminToken is the administrator's token, issued again when the clock has left the last
// one's lifetime (tests move the clock by years).
func (h *Harness) adminToken() string {
	now := h.clock() // before the lock: the harness's own clock takes it
	h.tokenMu.Lock()
	defer h.tokenMu.Unlock()
	if h.admin == "" || now.Before(h.adminIssuedAt) || !now.Before(h.adminExpires.Add(-time.Minute)) {
		tok, exp, err := h.App.Auth.IssueToken(context.Background(), h.adminClient, "")
		if err != nil {
			h.T.Fatalf("issuing the administrator's token: %v", err)
		}
		h.admin, h.adminIssuedAt, h.adminExpires = tok, now, exp
	}
	return h.admin
}

// Logger shows the server's warnings and errors in the test's output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Now is the harness's clock: the real time until SetNow fixes it.
func (h *Harness) Now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fixed.IsZero() {
		return time.Now()
	}
	return h.fixed
}

// SetNow stops the clock at t; the zero time starts it again.
func (h *Harness) SetNow(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fixed = t
}

// Reply is a response, read whole.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as a JSON object, with numbers as json.Number.
func (r *Reply) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("response is not JSON (%v): %s", err, r.Body)
	}
	return m
}

// Do sends a request to path (from the server's root, e.g. "/fhir/Patient") as an
// administrator. body is nil, a string, []byte, or a value sent as JSON; a body is FHIR JSON
// unless a Content-Type header says otherwise. Headers come as name, value pairs; an
// Authorization header replaces the administrator's token ("" sends none).
func (h *Harness) Do(method, path string, body any, headers ...string) *Reply {
	h.T.Helper()
	return h.DoURL(method, h.URL+path, body, headers...)
}

// DoURL is Do for a whole URL, such as a next link.
func (h *Harness) DoURL(method, url string, body any, headers ...string) *Reply {
	h.T.Helper()
	for i := 0; i+1 < len(headers); i += 2 {
		if http.CanonicalHeaderKey(headers[i]) == "Authorization" {
			return Do(h.T, method, url, body, headers...)
		}
	}
	return Do(h.T, method, url, body, append([]string{"Authorization", "Bearer " + h.adminToken()}, headers...)...)
}

// As sends a request with token, as Do does.
func (h *Harness) As(token, method, path string, body any, headers ...string) *Reply {
	h.T.Helper()
	return Do(h.T, method, h.URL+path, body, append([]string{"Authorization", "Bearer " + token}, headers...)...)
}

// Expect is Do, failing the test unless the status is want.
func (h *Harness) Expect(want int, method, path string, body any, headers ...string) *Reply {
	h.T.Helper()
	r := h.Do(method, path, body, headers...)
	if r.Status != want {
		h.T.Fatalf("%s %s: status %d, want %d\n%s", method, path, r.Status, want, r.Body)
	}
	return r
}

// Do is Harness.Do for any URL, reported to t.
func Do(t testing.TB, method, url string, body any, headers ...string) *Reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		if b != "" {
			rd = strings.NewReader(b)
		}
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &Reply{Status: res.StatusCode, Header: res.Header, Body: raw}
}

// Count is the number of rows a query counts, e.g. "SELECT count(*) FROM resource".
func (h *Harness) Count(sql string, args ...any) int {
	h.T.Helper()
	var n int
	if err := h.DB.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		h.T.Fatalf("%s: %v", sql, err)
	}
	return n
}

// clientKeys is one public JWK Set for every test client. Its clients get their tokens from
// IssueToken, never by assertion; registering them with keys rather than a secret spares a
// bcrypt hash each, which under the race detector costs most of a second.
func clientKeys(t testing.TB) []byte {
	t.Helper()
	keys, err := testKeys()
	if err != nil {
		t.Fatalf("making the test clients' key: %v", err)
	}
	return keys
}

var testKeys = sync.OnceValues(func() ([]byte, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	key, err := jwk.Import(&raw.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := jwk.AssignKeyID(key); err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(key); err != nil {
		return nil, err
	}
	return json.Marshal(set)
})
