package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/cartreg/cartreg/auth"
)

func TestPrivateKeyJWTGetsATokenThatPassesTheMiddleware(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, alg := range []jwa.SignatureAlgorithm{jwa.RS384(), jwa.ES384()} {
		t.Run(alg.String(), func(t *testing.T) {
			key := newClientKey(t, alg)
			cl, secret := e.addClient(auth.NewClient{Name: "EHR " + alg.String(), Role: auth.RoleEHR, JWKS: key.jwks})
			if secret != "" || cl.HasSecret {
				t.Fatal("a client with keys was given a secret")
			}
			r := e.postToken(assertionForm(e.assert(key, cl.ID, assertion{}), "system/Observation.write system/Patient.read"))
			if r.status != http.StatusOK {
				t.Fatalf("token: %d %s", r.status, r.raw)
			}
			if r.header.Get("Cache-Control") != "no-store" || r.body["token_type"] != "bearer" ||
				r.body["expires_in"] != float64(300) || r.body["scope"] != "system/Observation.write system/Patient.read" {
				t.Fatalf("token response %v %s", r.header, r.raw)
			}
			w := e.whoami("Bearer " + r.body["access_token"].(string))
			if w.status != http.StatusOK {
				t.Fatalf("whoami: %d %s", w.status, w.raw)
			}
			if w.body["Kind"] != "client" || w.body["Subject"] != cl.ID || w.body["Name"] != cl.Name || w.body["Role"] != "ehr" ||
				w.body["Scopes"] != "system/Observation.write system/Patient.read" {
				t.Fatalf("principal %s", w.raw)
			}
		})
	}
}

func TestTokenRequestsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	key := newClientKey(t, jwa.ES384())
	other := newClientKey(t, jwa.ES384())
	cl, _ := e.addClient(auth.NewClient{Name: "researcher job", Role: auth.RoleResearcher, JWKS: key.jwks})
	gone, _ := e.addClient(auth.NewClient{Name: "retired feed", Role: auth.RoleEHR, JWKS: key.jwks})
	if err := e.svc.DisableClient(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	replayed := e.assert(key, cl.ID, assertion{})
	if r := e.postToken(assertionForm(replayed, "")); r.status != http.StatusOK {
		t.Fatalf("first use of the assertion: %d %s", r.status, r.raw)
	}
	now := e.clock.Now()
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"expired assertion", assertionForm(e.assert(key, cl.ID, assertion{exp: now.Add(-time.Minute)}), ""), 401, "invalid_client"},
		{"exp too far ahead", assertionForm(e.assert(key, cl.ID, assertion{exp: now.Add(time.Hour)}), ""), 401, "invalid_client"},
		{"no exp", assertionForm(e.assert(key, cl.ID, assertion{noExp: true}), ""), 401, "invalid_client"},
		{"wrong aud", assertionForm(e.assert(key, cl.ID, assertion{aud: e.srv.URL + "/fhir"}), ""), 401, "invalid_client"},
		{"sub is not the client", assertionForm(e.assert(key, cl.ID, assertion{sub: "someone-else"}), ""), 401, "invalid_client"},
		{"replayed jti", assertionForm(replayed, ""), 401, "invalid_client"},
		{"key not in the client's JWKS", assertionForm(e.assert(other, cl.ID, assertion{}), ""), 401, "invalid_client"},
		{"disabled client", assertionForm(e.assert(key, gone.ID, assertion{}), ""), 401, "invalid_client"},
		{"unknown client", assertionForm(e.assert(key, "no-such-client", assertion{}), ""), 401, "invalid_client"},
		{"not a JWT", assertionForm("not.a.jwt", ""), 401, "invalid_client"},
		{"scope wider than registered", assertionForm(e.assert(key, cl.ID, assertion{}), "cartreg/outcomes.read system/Patient.read"), 400, "invalid_scope"},
		{"unknown scope", assertionForm(e.assert(key, cl.ID, assertion{}), "cartreg/everything"), 400, "invalid_scope"},
		{"no client authentication", url.Values{"grant_type": {"client_credentials"}}, 401, "invalid_client"},
		{"missing grant type", url.Values{"scope": {"cartreg/outcomes.read"}}, 400, "invalid_request"},
	}
	wrongGrant := assertionForm(e.assert(key, cl.ID, assertion{}), "")
	wrongGrant.Set("grant_type", "authorization_code")
	cases = append(cases, struct {
		name   string
		form   url.Values
		status int
		code   string
	}{"wrong grant type", wrongGrant, 400, "unsupported_grant_type"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantOAuthError(t, e.postToken(c.form), c.status, c.code)
		})
	}

	t.Run("not a form", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.tokenURL(), strings.NewReader(`{"grant_type":"client_credentials"}`))
		req.Header.Set("Content-Type", "application/json")
		wantOAuthError(t, e.do(req), 400, "invalid_request")
	})
	t.Run("a jti is refused until its assertion expires", func(t *testing.T) {
		jti := "one-off"
		if r := e.postToken(assertionForm(e.assert(key, cl.ID, assertion{jti: jti}), "")); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		wantOAuthError(t, e.postToken(assertionForm(e.assert(key, cl.ID, assertion{jti: jti}), "")), 401, "invalid_client")
		// Once the assertion that used it has expired, the jti is forgotten.
		e.clock.Advance(6 * time.Minute)
		if r := e.postToken(assertionForm(e.assert(key, cl.ID, assertion{jti: jti}), "")); r.status != 200 {
			t.Fatalf("the jti after its assertion expired: %d %s", r.status, r.raw)
		}
	})
}

func TestClientSecretBasic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cl, secret := e.addClient(auth.NewClient{Name: "coordinators' tool", Role: auth.RoleCoordinator, Sites: []string{"org-1", "org-2"}})
	if secret == "" || !cl.HasSecret {
		t.Fatal("a client without keys got no secret")
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"cartreg/worklist.read system/Task.rs"}}
	r := e.postToken(form, cl.ID, secret)
	if r.status != http.StatusOK || r.body["scope"] != "cartreg/worklist.read system/Task.rs" {
		t.Fatalf("token: %d %s", r.status, r.raw)
	}
	w := e.whoami("Bearer " + r.body["access_token"].(string))
	if w.status != http.StatusOK || w.body["Role"] != "coordinator" || !slices.Equal(toStrings(w.body["Sites"]), []string{"org-1", "org-2"}) {
		t.Fatalf("whoami: %d %s", w.status, w.raw)
	}

	wrong := e.postToken(form, cl.ID, secret+"x")
	wantOAuthError(t, wrong, 401, "invalid_client")
	if !strings.HasPrefix(wrong.header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("WWW-Authenticate = %q, want a Basic challenge", wrong.header.Get("WWW-Authenticate"))
	}
	wantOAuthError(t, e.postToken(form, "no-such-client", secret), 401, "invalid_client")
	// Task.write covers creating and deleting, which a coordinator is not registered for.
	wantOAuthError(t, e.postToken(url.Values{"grant_type": {"client_credentials"}, "scope": {"system/Task.write"}}, cl.ID, secret), 400, "invalid_scope")

	if err := e.svc.DisableClient(context.Background(), cl.ID); err != nil {
		t.Fatal(err)
	}
	wantOAuthError(t, e.postToken(form, cl.ID, secret), 401, "invalid_client")
	// The token issued before is refused too (this replica forgot the client at once).
	wantUnauthorized(t, e.whoami("Bearer "+r.body["access_token"].(string)), true)
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestJWKSURLClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first, second := newClientKey(t, jwa.RS384()), newClientKey(t, jwa.ES384())
	var published atomic.Value
	published.Store(first.jwks)
	var fetches atomic.Int32
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(published.Load().([]byte))
	}))
	t.Cleanup(keys.Close)
	cl, secret := e.addClient(auth.NewClient{Name: "EHR at a URL", Role: auth.RoleEHR, JWKSURL: keys.URL + "/jwks.json"})
	if secret != "" || cl.JWKSURL == "" {
		t.Fatalf("client %+v, secret %q", cl, secret)
	}
	if r := e.postToken(assertionForm(e.assert(first, cl.ID, assertion{}), "")); r.status != 200 {
		t.Fatalf("token: %d %s", r.status, r.raw)
	}
	// A key the cached set lacks is refused until the client publishes it; then the set is
	// fetched again at once.
	wantOAuthError(t, e.postToken(assertionForm(e.assert(second, cl.ID, assertion{}), "")), 401, "invalid_client")
	both := jwk.NewSet()
	for _, k := range []clientKey{first, second} {
		pub, _ := k.private.PublicKey()
		both.AddKey(pub)
	}
	body, _ := json.Marshal(both)
	published.Store(body)
	e.clock.Advance(10 * time.Second)
	before := fetches.Load()
	if r := e.postToken(assertionForm(e.assert(second, cl.ID, assertion{}), "")); r.status != 200 {
		t.Fatalf("token with the newly published key: %d %s", r.status, r.raw)
	}
	if fetches.Load() == before {
		t.Error("the set was not fetched again for an unknown kid")
	}
}

func TestAddClientRefusesWhatCannotWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := newClientKey(t, jwa.ES384())
	privateSet := jwk.NewSet()
	privateSet.AddKey(key.private)
	privateJWKS, _ := json.Marshal(privateSet)
	cases := map[string]auth.NewClient{
		"no name":                 {Role: auth.RoleEHR},
		"unknown role":            {Name: "x", Role: "superuser"},
		"coordinator no sites":    {Name: "x", Role: auth.RoleCoordinator},
		"sites on an ehr":         {Name: "x", Role: auth.RoleEHR, Sites: []string{"org-1"}},
		"bad scope":               {Name: "x", Role: auth.RoleEHR, Scopes: "patient/*.read"},
		"private key registered":  {Name: "x", Role: auth.RoleEHR, JWKS: privateJWKS},
		"both keys and URL":       {Name: "x", Role: auth.RoleEHR, JWKS: key.jwks, JWKSURL: "https://ehr.example/jwks"},
		"plain http JWKS URL":     {Name: "x", Role: auth.RoleEHR, JWKSURL: "http://ehr.example/jwks"},
		"not a JWK Set":           {Name: "x", Role: auth.RoleEHR, JWKS: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"}]}`)},
		"coordinator bad site id": {Name: "x", Role: auth.RoleCoordinator, Sites: []string{"Organization/1"}},
	}
	for name, nc := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := e.svc.AddClient(context.Background(), nc)
			var ice *auth.InvalidClientError
			if !errors.As(err, &ice) {
				t.Fatalf("AddClient = %v, want an InvalidClientError", err)
			}
		})
	}
	list, err := e.svc.ListClients(context.Background())
	if err != nil || len(list) != 0 {
		t.Fatalf("ListClients = %v, %v; want none registered", list, err)
	}
}

func TestIssueTokenAndListClients(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	admin, _ := e.addClient(auth.NewClient{Name: "ops", Role: auth.RoleAdmin})
	res, _ := e.addClient(auth.NewClient{Name: "analysis", Role: auth.RoleResearcher})
	tok, exp, err := e.svc.IssueToken(ctx, admin.ID, "system/Patient.rs cartreg/admin")
	if err != nil || !exp.After(e.clock.Now()) {
		t.Fatalf("IssueToken = %v, %v", exp, err)
	}
	w := e.whoami("Bearer " + tok)
	if w.status != 200 || w.body["Role"] != "admin" || w.body["Scopes"] != "system/Patient.rs cartreg/admin" {
		t.Fatalf("whoami: %d %s", w.status, w.raw)
	}
	var se *auth.ScopeError
	if _, _, err := e.svc.IssueToken(ctx, res.ID, "system/Patient.read"); !errors.As(err, &se) {
		t.Errorf("IssueToken beyond the registered scopes = %v, want a ScopeError", err)
	}
	if _, _, err := e.svc.IssueToken(ctx, "nobody", ""); !errors.Is(err, auth.ErrClientNotFound) {
		t.Errorf("IssueToken for an unknown client = %v", err)
	}
	if err := e.svc.DisableClient(ctx, res.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.IssueToken(ctx, res.ID, ""); !errors.Is(err, auth.ErrClientDisabled) {
		t.Errorf("IssueToken for a disabled client = %v", err)
	}
	if err := e.svc.DisableClient(ctx, "nobody"); !errors.Is(err, auth.ErrClientNotFound) {
		t.Errorf("DisableClient(nobody) = %v", err)
	}
	list, err := e.svc.ListClients(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListClients = %v, %v", list, err)
	}
	byID := map[string]auth.Client{list[0].ID: list[0], list[1].ID: list[1]}
	if got := byID[res.ID]; !got.Disabled || !got.HasSecret || got.Scopes.String() != "cartreg/outcomes.read" {
		t.Errorf("researcher listed as %+v", got)
	}
	if got := byID[admin.ID]; got.Disabled || got.Role != auth.RoleAdmin || !got.Scopes.Has(auth.ScopeAdmin) {
		t.Errorf("admin listed as %+v", got)
	}
}
