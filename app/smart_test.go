package app_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/internal/shareddata"
)

// An EHR connects as SMART Backend Services describes: it registers its public key, signs an
// assertion for the token endpoint named by the SMART configuration, and loads a patient's
// Synthea record with the token it gets.
func TestASMARTBackendServiceLoadsASyntheaPatient(t *testing.T) {
	h := apptest.New(t)
	raw, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := jwk.Import(raw)
	if err := jwk.AssignKeyID(key); err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	jwks, _ := json.Marshal(set)
	client, _, err := h.App.Auth.AddClient(context.Background(), auth.NewClient{Name: "Synthea EHR", Role: auth.RoleEHR, JWKS: jwks})
	if err != nil {
		t.Fatal(err)
	}

	smart := h.Expect(http.StatusOK, "GET", "/fhir/.well-known/smart-configuration", nil, "Authorization", "").JSON(t)
	endpoint := smart["token_endpoint"].(string)
	claims, _ := jwt.NewBuilder().Issuer(client.ID).Subject(client.ID).Audience([]string{endpoint}).
		JwtID(uuid.NewString()).Expiration(time.Now().Add(4 * time.Minute)).Build()
	assertion, err := jwt.Sign(claims, jwt.WithKey(jwa.ES384(), key))
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"system/*.read system/*.write"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {string(assertion)}}
	res, err := http.Post(endpoint, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	_ = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("token endpoint: %d %+v", res.StatusCode, tok)
	}

	// The hospitals and practitioners first (batches), then one patient's transaction.
	var patient []byte
	for _, path := range shareddata.Glob(t, "synthea/hiv-bundles/*.json.gz") {
		body := gunzip(t, path)
		var head struct{ Type string }
		_ = json.Unmarshal(body, &head)
		switch {
		case head.Type == "batch":
			if r := h.As(tok.AccessToken, "POST", "/fhir", body); r.Status != http.StatusOK {
				t.Fatalf("%s: %d %.300s", path, r.Status, r.Body)
			}
		case patient == nil:
			patient = body
		}
	}
	r := h.As(tok.AccessToken, "POST", "/fhir/", patient, "Content-Type", "application/json")
	if r.Status != http.StatusOK {
		t.Fatalf("the patient's transaction: %d %.500s", r.Status, r.Body)
	}
	if n := h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Patient'`); n != 1 {
		t.Errorf("%d patients after the load", n)
	}
	// A replayed assertion gets nothing.
	res, _ = http.Post(endpoint, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusUnauthorized {
		t.Errorf("a replayed assertion: %d", res.StatusCode)
	}
	res.Body.Close()
}

func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
