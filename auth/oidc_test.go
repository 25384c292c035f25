package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/auth"
)

// issuer is a local OpenID Connect provider: a discovery document and a JWK Set.
type issuer struct {
	t   *testing.T
	srv *httptest.Server

	mu   sync.Mutex
	keys []jwk.Key // private; the newest signs
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		set := jwk.NewSet()
		for _, k := range is.keys {
			pub, _ := k.PublicKey()
			set.AddKey(pub)
		}
		json.NewEncoder(w).Encode(set)
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	is.addKey()
	return is
}

func (is *issuer) addKey() {
	raw, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		is.t.Fatal(err)
	}
	key, _ := jwk.Import(raw)
	jwk.AssignKeyID(key)
	key.Set(jwk.AlgorithmKey, jwa.RS256())
	is.mu.Lock()
	is.keys = append(is.keys, key)
	is.mu.Unlock()
}

func (is *issuer) token(claims map[string]any) string {
	is.t.Helper()
	tok := jwt.New()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			is.t.Fatal(err)
		}
	}
	is.mu.Lock()
	key := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256(), key))
	if err != nil {
		is.t.Fatal(err)
	}
	return string(signed)
}

func TestOIDCTokensSignPeopleIn(t *testing.T) {
	t.Parallel()
	idp, stranger := newIssuer(t), newIssuer(t)
	e := newEnv(t, auth.OIDCProvider{
		Issuer: idp.srv.URL, Audience: "cartreg-web", RoleClaim: "roles", SiteClaim: "sites",
		RoleMap: map[string]auth.Role{
			"registry-coordinator": auth.RoleCoordinator, "registry-researcher": auth.RoleResearcher, "registry-admin": auth.RoleAdmin,
		},
	})
	claims := func(overrides map[string]any) map[string]any {
		c := map[string]any{
			"iss": idp.srv.URL, "aud": "cartreg-web", "sub": "u-123", "name": "Ana Reyes",
			"exp": e.clock.Now().Add(5 * time.Minute).Unix(), "iat": e.clock.Now().Unix(),
			"roles": []string{"staff", "registry-coordinator"}, "sites": []string{"org-1", "org-7"},
		}
		for k, v := range overrides {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}

	r := e.whoami("Bearer " + idp.token(claims(nil)))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if r.body["Kind"] != "user" || r.body["Subject"] != idp.srv.URL+"|u-123" || r.body["Name"] != "Ana Reyes" ||
		r.body["Role"] != "coordinator" || !slices.Equal(toStrings(r.body["Sites"]), []string{"org-1", "org-7"}) ||
		!strings.Contains(r.body["Scopes"].(string), "cartreg/worklist.read") {
		t.Fatalf("principal %s", r.raw)
	}
	if r := e.whoami("Bearer " + idp.token(claims(map[string]any{"roles": "registry-researcher"}))); r.status != 200 || r.body["Role"] != "researcher" || r.body["Sites"] != nil {
		t.Errorf("a role as a string: %d %s", r.status, r.raw)
	}

	refused := map[string]string{
		"wrong audience":               idp.token(claims(map[string]any{"aud": "another-app"})),
		"unknown issuer":               stranger.token(claims(map[string]any{"iss": stranger.srv.URL})),
		"issuer's name, another's key": stranger.token(claims(nil)),
		"expired":                      idp.token(claims(map[string]any{"exp": e.clock.Now().Add(-5 * time.Minute).Unix()})),
		"no mapped role":               idp.token(claims(map[string]any{"roles": []string{"staff"}})),
		"no role claim":                idp.token(claims(map[string]any{"roles": nil})),
		"two mapped roles":             idp.token(claims(map[string]any{"roles": []string{"registry-admin", "registry-researcher"}})),
	}
	for name, tok := range refused {
		t.Run(name, func(t *testing.T) {
			wantUnauthorized(t, e.whoami("Bearer "+tok), true)
		})
	}

	t.Run("a new key of the provider is fetched when a token names it", func(t *testing.T) {
		idp.addKey()
		// The forged token above made the set be fetched again; forced fetches are spaced.
		if r := e.whoami("Bearer " + idp.token(claims(nil))); r.status != 401 {
			t.Fatalf("a new key within seconds of the last forced fetch: %d %s", r.status, r.raw)
		}
		e.clock.Advance(10 * time.Second)
		if r := e.whoami("Bearer " + idp.token(claims(nil))); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
}
