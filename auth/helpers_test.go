package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a Service on its own database behind a real HTTP server: Register's endpoints, and
// /whoami behind the Middleware, answering the Principal as JSON. /healthz is public.
type env struct {
	t     *testing.T
	svc   *auth.Service
	srv   *httptest.Server
	clock *clock
}

func newEnv(t *testing.T, providers ...auth.OIDCProvider) *env {
	t.Helper()
	db := pgtest.NewDatabase(t)
	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	svc, err := auth.New(context.Background(), db, auth.Config{Issuer: srv.URL, OIDC: providers}, clk.Now, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	e := echo.New()
	e.Use(svc.Middleware(func(c echo.Context) bool { return c.Path() == "/healthz" }))
	svc.Register(e)
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	e.GET("/whoami", func(c echo.Context) error {
		p, ok := auth.FromContext(c.Request().Context())
		if !ok {
			return c.String(http.StatusInternalServerError, "no principal in the context")
		}
		return c.JSON(http.StatusOK, p)
	})
	handler = e
	return &env{t: t, svc: svc, srv: srv, clock: clk}
}

func (e *env) tokenURL() string { return e.srv.URL + "/auth/token" }

// response is a decoded HTTP response.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) do(req *http.Request) response {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// postToken posts a form to the token endpoint, with HTTP Basic credentials when basic has two.
func (e *env) postToken(form url.Values, basic ...string) response {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.tokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	return e.do(req)
}

// whoami calls the protected endpoint with the Authorization header given (none if empty).
func (e *env) whoami(authorization string) response {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/whoami", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return e.do(req)
}

// clientKey is a client's private key and the public JWK Set it registers.
type clientKey struct {
	alg     jwa.SignatureAlgorithm
	private jwk.Key
	jwks    []byte
}

func newClientKey(t *testing.T, alg jwa.SignatureAlgorithm) clientKey {
	t.Helper()
	var raw any
	var err error
	switch alg.String() {
	case "RS384":
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES384":
		raw, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		t.Fatalf("no key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := jwk.AssignKeyID(priv); err != nil {
		t.Fatal(err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return clientKey{alg: alg, private: priv, jwks: jwks}
}

// assertion is a client assertion's claims; zero fields take good values.
type assertion struct {
	iss, sub, aud, jti string
	exp                time.Time
	noExp              bool
}

func (e *env) assert(k clientKey, clientID string, a assertion) string {
	e.t.Helper()
	if a.iss == "" {
		a.iss = clientID
	}
	if a.sub == "" {
		a.sub = clientID
	}
	if a.aud == "" {
		a.aud = e.tokenURL()
	}
	if a.jti == "" {
		a.jti = uuid.NewString()
	}
	if a.exp.IsZero() {
		a.exp = e.clock.Now().Add(4 * time.Minute)
	}
	b := jwt.NewBuilder().Issuer(a.iss).Subject(a.sub).Audience([]string{a.aud}).JwtID(a.jti)
	if !a.noExp {
		b = b.Expiration(a.exp)
	}
	tok, err := b.Build()
	if err != nil {
		e.t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(k.alg, k.private))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(signed)
}

func assertionForm(assertion, scope string) url.Values {
	f := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	if scope != "" {
		f.Set("scope", scope)
	}
	return f
}

func (e *env) addClient(nc auth.NewClient) (auth.Client, string) {
	e.t.Helper()
	cl, secret, err := e.svc.AddClient(context.Background(), nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return cl, secret
}

// wantOAuthError checks an RFC 6749 error response.
func wantOAuthError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.body["error"] != code {
		t.Fatalf("got %d %s, want %d with error %q", r.status, r.raw, status, code)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
}

// wantUnauthorized checks the Middleware's refusal: 401, a Bearer challenge (with
// error="invalid_token" when a token was given), and an OperationOutcome with code login.
func wantUnauthorized(t *testing.T, r response, tokenGiven bool) {
	t.Helper()
	if r.status != http.StatusUnauthorized {
		t.Fatalf("status %d (%s), want 401", r.status, r.raw)
	}
	challenge := r.header.Get("WWW-Authenticate")
	if !strings.HasPrefix(challenge, `Bearer realm="cartreg"`) {
		t.Errorf("WWW-Authenticate = %q", challenge)
	}
	if got := strings.Contains(challenge, `error="invalid_token"`); got != tokenGiven {
		t.Errorf("WWW-Authenticate = %q: invalid_token present %v, want %v", challenge, got, tokenGiven)
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+json") {
		t.Errorf("Content-Type = %q", r.header.Get("Content-Type"))
	}
	issues, _ := r.body["issue"].([]any)
	if r.body["resourceType"] != "OperationOutcome" || len(issues) != 1 {
		t.Fatalf("body is not an OperationOutcome with one issue: %s", r.raw)
	}
	issue := issues[0].(map[string]any)
	if issue["code"] != "login" || issue["severity"] != "error" || issue["diagnostics"] == "" {
		t.Errorf("issue = %v", issue)
	}
}
