package app_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
)

// A person signed in at the hospital's OpenID Connect provider (a local one here) reaches the
// registry with the provider's token: a coordinator their site, a researcher the outcomes; a
// person whose groups map to no role, nothing.
func TestPeopleSignInThroughTheHospitalsProvider(t *testing.T) {
	raw, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := jwk.Import(raw)
	_ = jwk.AssignKeyID(key)
	_ = key.Set(jwk.AlgorithmKey, jwa.RS256())
	var provider *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": provider.URL, "jwks_uri": provider.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		pub, _ := key.PublicKey()
		set := jwk.NewSet()
		_ = set.AddKey(pub)
		_ = json.NewEncoder(w).Encode(set)
	})
	provider = httptest.NewServer(mux)
	defer provider.Close()

	n := newNetworkWith(t, apptest.WithConfig(func(c *app.Config) {
		c.Auth.OIDC = []auth.OIDCProvider{{Issuer: provider.URL, Audience: "cartreg", RoleClaim: "groups", SiteClaim: "sites",
			RoleMap: map[string]auth.Role{"cart-coordinators": auth.RoleCoordinator, "cart-research": auth.RoleResearcher}}}
	}))
	person := func(groups []string, sites ...string) string {
		tok := jwt.New()
		for k, v := range map[string]any{"iss": provider.URL, "sub": "u-" + groups[0], "aud": "cartreg", "name": "Ada Okafor",
			"exp": time.Now().Add(5 * time.Minute), "iat": time.Now(), "groups": groups, "sites": sites} {
			_ = tok.Set(k, v)
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256(), key))
		if err != nil {
			t.Fatal(err)
		}
		return string(signed)
	}
	coordinator := person([]string{"staff", "cart-coordinators"}, n.siteA)
	for path, want := range map[string]int{
		"/fhir/Patient/" + n.patientA: 200, "/fhir/Patient/" + n.patientB: 404, "/worklist": 200, "/registry/outcomes/response": 403,
	} {
		if r := n.h.As(coordinator, "GET", path, nil); r.Status != want {
			t.Errorf("coordinator by OIDC %s: %d, want %d: %s", path, r.Status, want, r.Body)
		}
	}
	researcher := person([]string{"cart-research"})
	if r := n.h.As(researcher, "GET", "/registry/outcomes/response", nil); r.Status != 200 {
		t.Errorf("researcher by OIDC: %d %s", r.Status, r.Body)
	}
	if r := n.h.As(person([]string{"staff"}), "GET", "/registry/outcomes/response", nil); r.Status != 401 {
		t.Errorf("a person with no cartreg role: %d, want 401", r.Status)
	}
}
