package web_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/auth"
)

// provider is a real OpenID Connect provider over HTTP, as far as the code flow needs: its
// discovery document, its keys, an authorize endpoint that signs in whoever the test says
// and sends the browser back with a code, and a token endpoint that takes each code once,
// with the PKCE verifier of its challenge, and answers with a signed ID token.
type provider struct {
	t      testing.TB
	srv    *httptest.Server
	key    jwk.Key
	now    func() time.Time
	client string
	secret string

	mu sync.Mutex
	// person is the claims of whoever signs in next; tamper changes the next ID tokens.
	person map[string]any
	tamper func(claims map[string]any)
	codes  map[string]grant
}

type grant struct {
	challenge, nonce, redirect string
	claims                     map[string]any
}

func newProvider(t testing.TB, now func() time.Time) *provider {
	raw, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := jwk.Import(raw)
	_ = jwk.AssignKeyID(key)
	_ = key.Set(jwk.AlgorithmKey, jwa.RS256())
	p := &provider{t: t, key: key, now: now, client: "cartreg-pages", secret: "s3cret of the pages", codes: map[string]grant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/keys",
			"authorization_endpoint": p.srv.URL + "/authorize", "token_endpoint": p.srv.URL + "/token",
			"code_challenge_methods_supported": []string{"S256"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		pub, _ := key.PublicKey()
		set := jwk.NewSet()
		_ = set.AddKey(pub)
		_ = json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("response_type") != "code" || q.Get("client_id") != p.client || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" || !strings.Contains(q.Get("scope"), "openid") {
		http.Error(w, "bad authorization request: "+r.URL.RawQuery, http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	code := fmt.Sprintf("code-%d", len(p.codes)+1)
	claims := map[string]any{}
	for k, v := range p.person {
		claims[k] = v
	}
	p.codes[code] = grant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirect: q.Get("redirect_uri"), claims: claims}
	p.mu.Unlock()
	back, _ := url.Parse(q.Get("redirect_uri"))
	bq := back.Query()
	bq.Set("code", code)
	bq.Set("state", q.Get("state"))
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *provider) token(w http.ResponseWriter, r *http.Request) {
	fail := func(code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
	}
	if id != p.client || subtle.ConstantTimeCompare([]byte(secret), []byte(p.secret)) != 1 {
		fail("invalid_client")
		return
	}
	p.mu.Lock()
	g, ok := p.codes[r.PostFormValue("code")]
	delete(p.codes, r.PostFormValue("code")) // a code is good once
	tamper := p.tamper
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
	if !ok || r.PostFormValue("grant_type") != "authorization_code" || r.PostFormValue("redirect_uri") != g.redirect ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		fail("invalid_grant")
		return
	}
	now := p.now()
	claims := map[string]any{"iss": p.srv.URL, "aud": p.client, "exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(), "nonce": g.nonce}
	for k, v := range g.claims {
		claims[k] = v
	}
	if tamper != nil {
		tamper(claims)
	}
	tok := jwt.New()
	for k, v := range claims {
		_ = tok.Set(k, v)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256(), p.key))
	if err != nil {
		p.t.Error(err)
		fail("server_error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque", "token_type": "Bearer", "expires_in": 300,
		"id_token": string(signed)})
}

func (p *provider) signsIn(claims map[string]any, tamper func(map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.person, p.tamper = claims, tamper
}

// config makes the provider the identity layer's, and the pages'.
func (p *provider) config(c *app.Config) {
	c.Auth.OIDC = []auth.OIDCProvider{{Issuer: p.srv.URL, Audience: "cartreg-api", RoleClaim: "groups", SiteClaim: "sites",
		RoleMap: map[string]auth.Role{"cart-coordinators": auth.RoleCoordinator, "cart-research": auth.RoleResearcher}}}
	c.Web.OIDC.Issuer, c.Web.OIDC.ClientID, c.Web.OIDC.ClientSecret, c.Web.OIDC.Name = p.srv.URL, p.client, p.secret, "St Elsewhere Login"
}

// abs fetches an absolute URL (the provider's, or the server's callback) with the browser's
// cookies, without following redirects.
func (b *browser) abs(rawURL string) page {
	b.t.Helper()
	if !strings.HasPrefix(rawURL, "http") {
		return b.get(rawURL)
	}
	res, err := b.client.Get(rawURL)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return page{status: res.StatusCode, location: res.Header.Get("Location"), header: res.Header, body: string(raw)}
}

// toProvider starts a sign-in and returns the URL the provider sends the browser back to.
func (b *browser) toProvider(next string) string {
	b.t.Helper()
	start := b.get("/signin/oidc?next=" + url.QueryEscape(next))
	if start.status != http.StatusSeeOther || !strings.Contains(start.location, "/authorize?") {
		b.t.Fatalf("starting the sign-in: %d %s\n%s", start.status, start.location, start.body)
	}
	cookies := strings.Join(start.header.Values("Set-Cookie"), "\n")
	for _, want := range []string{"cartreg_oidc=", "HttpOnly", "SameSite=Lax", "Path=/signin/oidc", "Max-Age=600"} {
		if !strings.Contains(cookies, want) {
			b.t.Errorf("the sign-in's cookie %q lacks %s", cookies, want)
		}
	}
	at := b.abs(start.location)
	if at.status != http.StatusFound || !strings.HasPrefix(at.location, b.base+"/signin/oidc/callback?") {
		b.t.Fatalf("at the provider: %d %s\n%s", at.status, at.location, at.body)
	}
	return at.location
}

func TestOIDCSignIn(t *testing.T) {
	var idp *provider
	var w *world
	idp = newProvider(t, func() time.Time { return w.h.Now() })
	w = newWorld(t, idp.config)
	coordinator := map[string]any{"sub": "u-17", "name": "Nadia Haddad", "groups": []string{"staff", "cart-coordinators"},
		"sites": []string{w.site}}
	sessions := func() int { return w.h.Count(`SELECT count(*) FROM web_session`) }

	b := w.browser()
	if p := b.get("/signin?next=%2Fwork"); !strings.Contains(p.body, "Sign in with St Elsewhere Login") ||
		!strings.Contains(p.body, `href="/signin/oidc?next=%2Fwork"`) {
		t.Fatalf("the sign-in page does not offer the provider:\n%s", p.body)
	}
	idp.signsIn(coordinator, nil)
	back := b.toProvider("/work")
	p := b.abs(back)
	if p.status != http.StatusSeeOther || p.location != "/work" {
		t.Fatalf("back from the provider: %d %s\n%s", p.status, p.location, p.body)
	}
	if !strings.Contains(strings.Join(p.header.Values("Set-Cookie"), "\n"), "cartreg_session=") {
		t.Fatal("no session cookie")
	}
	work := b.get("/work")
	if work.status != http.StatusOK || !strings.Contains(work.body, "Öztürk N") || strings.Contains(work.body, "Öztürk R") ||
		!strings.Contains(work.body, "Nadia Haddad (coordinator)") {
		t.Fatalf("the coordinator's work list: %d\n%s", work.status, work.body)
	}
	subject := idp.srv.URL + "|u-17"
	if n := w.h.Count(`SELECT count(*) FROM web_user WHERE name = $1 AND role = 'coordinator' AND sites = $2`, subject, []string{w.site}); n != 1 {
		t.Errorf("the person is not recorded with their role and site")
	}
	// The page's session is the person's principal: its actions are theirs.
	if p := b.post("/signout", nil); p.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", p.status)
	}
	// A replayed callback: the browser's sign-in was used up, and so was the code.
	if p := b.abs(back); p.status != http.StatusBadRequest || sessions() != 0 {
		t.Errorf("the same callback again: %d, %d sessions", p.status, sessions())
	}

	firstBack := back
	refused := []struct {
		name   string
		status int
		claims map[string]any
		tamper func(map[string]any)
		back   func(b *browser, back string) string
		says   string
	}{
		{name: "wrong state", status: http.StatusBadRequest, says: "does not belong to the sign-in this browser started",
			back: func(_ *browser, back string) string {
				u, _ := url.Parse(back)
				q := u.Query()
				q.Set("state", "forged")
				u.RawQuery = q.Encode()
				return u.String()
			}},
		{name: "replayed code", status: http.StatusUnauthorized, says: "did not accept this sign-in",
			back: func(b *browser, back string) string {
				// A new sign-in in this browser, answered with the first sign-in's code.
				u, _ := url.Parse(back)
				first, _ := url.Parse(firstBack)
				q := u.Query()
				q.Set("code", first.Query().Get("code"))
				u.RawQuery = q.Encode()
				return u.String()
			}},
		{name: "bad nonce", status: http.StatusUnauthorized, says: "nonce", tamper: func(c map[string]any) { c["nonce"] = "another sign-in's" }},
		{name: "wrong audience", status: http.StatusUnauthorized, says: "aud", tamper: func(c map[string]any) { c["aud"] = "cartreg-api" }},
		{name: "expired", status: http.StatusUnauthorized, says: "exp", tamper: func(c map[string]any) {
			c["exp"] = w.h.Now().Add(-5 * time.Minute).Unix()
		}},
		{name: "signed by another key", status: http.StatusUnauthorized, tamper: func(c map[string]any) { c["iss"] = "https://elsewhere.example" }},
		{name: "no role", status: http.StatusForbidden, says: "no role in the registry",
			claims: map[string]any{"sub": "u-18", "name": "Sam Staff", "groups": []string{"staff"}}},
		{name: "a coordinator of no site", status: http.StatusForbidden, says: "of no site",
			claims: map[string]any{"sub": "u-19", "groups": []string{"cart-coordinators"}}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			claims := coordinator
			if tc.claims != nil {
				claims = tc.claims
			}
			idp.signsIn(claims, tc.tamper)
			b := w.browser()
			b.t = t
			back := b.toProvider("/work")
			if tc.back != nil {
				back = tc.back(b, back)
			}
			p := b.abs(back)
			if p.status != tc.status || !strings.Contains(p.body, tc.says) {
				t.Errorf("%d, want %d saying %q\n%s", p.status, tc.status, tc.says, p.body)
			}
			if strings.Contains(strings.Join(p.header.Values("Set-Cookie"), "\n"), "cartreg_session=") || sessions() != 0 {
				t.Errorf("a session was started: %d", sessions())
			}
			if p := b.get("/work"); p.status != http.StatusSeeOther {
				t.Errorf("GET /work after the refusal: %d", p.status)
			}
		})
	}
	idp.signsIn(coordinator, nil)

	// A person the operator disabled gets no session, whatever the provider says.
	if err := w.h.App.Web.Users().DisableUser(t.Context(), subject); err != nil {
		t.Fatal(err)
	}
	b = w.browser()
	if p := b.abs(b.toProvider("/")); p.status != http.StatusForbidden || sessions() != 0 {
		t.Errorf("a disabled person: %d, %d sessions", p.status, sessions())
	}
	// A local name cannot be used to reach a provider's person by password.
	if p := b.signIn(subject, "anything at all"); p.status != http.StatusUnauthorized {
		t.Errorf("a provider's person by password: %d", p.status)
	}

	if err := w.h.App.Audit.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := w.h.Count(`SELECT count(*) FROM audit_event WHERE interaction = 'login' AND event::text LIKE '%/signin/oidc/callback%' AND outcome = 303`); n != 1 {
		t.Errorf("%d successful OIDC sign-ins audited, want 1", n)
	}
	if n := w.h.Count(`SELECT count(*) FROM audit_event WHERE interaction = 'login' AND event::text LIKE '%/signin/oidc/callback%' AND outcome >= 400`); n != len(refused)+2 {
		t.Errorf("%d refused OIDC sign-ins audited, want %d", n, len(refused)+2)
	}
}
