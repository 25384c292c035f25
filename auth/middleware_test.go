package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/auth"
)

func (e *env) get(path, authorization string) response {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return e.do(req)
}

// kidOf reads the kid of a compact JWS's protected header.
func kidOf(t *testing.T, token string) string {
	t.Helper()
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
	return kid
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestMiddlewareRefusesWithAChallengeAndAnOperationOutcome(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cl, _ := e.addClient(auth.NewClient{Name: "feed", Role: auth.RoleEHR})
	good, _, err := e.svc.IssueToken(ctx, cl.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := e.whoami("Bearer " + good); r.status != 200 {
		t.Fatalf("a good token: %d %s", r.status, r.raw)
	}
	ourKid := kidOf(t, good)
	claims := map[string]any{
		"iss": e.srv.URL, "aud": e.srv.URL, "sub": cl.ID, "exp": e.clock.Now().Add(time.Minute).Unix(),
		"jti": "x", "scope": "system/*.*", "cartreg_role": "admin",
	}

	// A forger's own key, presented under the server's kid, with the algorithm the server uses.
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forgerKey, _ := jwk.Import(raw)
	forgerKey.Set(jwk.KeyIDKey, ourKid)
	forgedTok := jwt.New()
	for k, v := range claims {
		forgedTok.Set(k, v)
	}
	forged, err := jwt.Sign(forgedTok, jwt.WithKey(jwa.ES256(), forgerKey))
	if err != nil {
		t.Fatal(err)
	}
	// HS256 with the server's public key as the shared secret: the classic confusion.
	pub := e.get("/auth/jwks.json", "")
	hmacKey, _ := jwk.Import([]byte(pub.raw))
	hmacKey.Set(jwk.KeyIDKey, ourKid)
	confused, err := jwt.Sign(forgedTok, jwt.WithKey(jwa.HS256(), hmacKey))
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name          string
		authorization string
		tokenGiven    bool
	}{
		{"no Authorization header", "", false},
		{"Basic credentials", "Basic dXNlcjpwYXNz", false},
		{"empty bearer", "Bearer ", true},
		{"bogus token", "Bearer not-a-token", true},
		{"alg none", "Bearer " + b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + b64(claims) + ".", true},
		{"alg none with the server's kid", "Bearer " + b64(map[string]string{"alg": "none", "kid": ourKid}) + "." + b64(claims) + ".", true},
		{"signed by another key under the server's kid", "Bearer " + string(forged), true},
		{"HS256 keyed with the public key", "Bearer " + string(confused), true},
		{"tampered payload", "Bearer " + strings.Split(good, ".")[0] + "." + b64(claims) + "." + strings.Split(good, ".")[2], true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantUnauthorized(t, e.whoami(c.authorization), c.tokenGiven)
		})
	}

	t.Run("public and own endpoints need no token", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/auth/jwks.json", "/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"} {
			if r := e.get(path, ""); r.status != 200 {
				t.Errorf("%s: %d %s", path, r.status, r.raw)
			}
		}
	})

	t.Run("expired token", func(t *testing.T) {
		e.clock.Advance(5*time.Minute + time.Minute)
		wantUnauthorized(t, e.whoami("Bearer "+good), true)
	})
}

func TestRotatedKeyKeepsVerifyingItsTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cl, _ := e.addClient(auth.NewClient{Name: "feed", Role: auth.RoleEHR})
	before, _, err := e.svc.IssueToken(ctx, cl.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	kid, err := e.svc.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _, err := e.svc.IssueToken(ctx, cl.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if kidOf(t, after) != kid || kidOf(t, before) == kid {
		t.Fatalf("kids: before %s, after %s, new key %s", kidOf(t, before), kidOf(t, after), kid)
	}
	e.clock.Advance(4 * time.Minute)
	for name, tok := range map[string]string{"rotated-out key": before, "new key": after} {
		if r := e.whoami("Bearer " + tok); r.status != 200 {
			t.Errorf("token signed by the %s: %d %s", name, r.status, r.raw)
		}
	}
	if n := jwksLen(t, e); n != 2 {
		t.Errorf("JWKS has %d keys after a rotation, want the old and the new", n)
	}
	// Once the old key's tokens have all expired, the next rotation drops it.
	e.clock.Advance(10 * time.Minute)
	if _, err := e.svc.RotateSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	set := e.get("/auth/jwks.json", "")
	if n := jwksLen(t, e); n != 2 || strings.Contains(set.raw, kidOf(t, before)) {
		t.Errorf("JWKS after a second rotation: %s", set.raw)
	}
}

func jwksLen(t *testing.T, e *env) int {
	t.Helper()
	r := e.get("/auth/jwks.json", "")
	set, err := jwk.Parse([]byte(r.raw))
	if err != nil {
		t.Fatalf("JWKS %s: %v", r.raw, err)
	}
	for i := range set.Len() {
		k, _ := set.Key(i)
		if private, _ := jwk.IsPrivateKey(k); private {
			t.Fatalf("the JWKS publishes a private key: %s", r.raw)
		}
	}
	return set.Len()
}

func TestSMARTConfigurationAndSecurityExtension(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.get("/fhir/.well-known/smart-configuration", "")
	if r.status != 200 || r.body["token_endpoint"] != e.tokenURL() || r.body["jwks_uri"] != e.srv.URL+"/auth/jwks.json" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	for key, want := range map[string][]string{
		"token_endpoint_auth_methods_supported":            {"private_key_jwt", "client_secret_basic"},
		"token_endpoint_auth_signing_alg_values_supported": {"RS384", "ES384"},
		"grant_types_supported":                            {"client_credentials"},
		"capabilities":                                     {"client-confidential-asymmetric", "client-confidential-symmetric", "permission-v1", "permission-v2"},
	} {
		if got := strings.Join(toStrings(r.body[key]), " "); got != strings.Join(want, " ") {
			t.Errorf("%s = %s", key, got)
		}
	}
	sec, _ := json.Marshal(auth.SecurityExtension(e.srv.URL + "/"))
	for _, want := range []string{
		`"url":"http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"`,
		`{"url":"token","valueUri":"` + e.tokenURL() + `"}`,
		`"system":"http://terminology.hl7.org/CodeSystem/restful-security-service"`, `"code":"SMART-on-FHIR"`,
	} {
		if !strings.Contains(string(sec), want) {
			t.Errorf("security extension lacks %s: %s", want, sec)
		}
	}
}
