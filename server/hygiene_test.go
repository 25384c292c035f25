package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// hostEcho is a server with one route that answers the Host and scheme it was taken to have.
func hostEcho(t *testing.T, cfg Config) string {
	t.Helper()
	s := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	s.Echo.GET("/whoami", func(c echo.Context) error {
		return c.String(http.StatusOK, c.Scheme()+"://"+c.Request().Host+" from "+c.RealIP())
	})
	s.Echo.GET("/fail", func(c echo.Context) error { return io.ErrUnexpectedEOF })
	return running(t, s)
}

func getWith(t *testing.T, url string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

// Links the server writes are built on the Host it is reached at, never on a client's Host or
// X-Forwarded-* headers, unless they come from a configured proxy.
func TestHostAndForwardedHeadersAreNotTakenFromClients(t *testing.T) {
	base := hostEcho(t, testConfig())
	own := strings.TrimPrefix(base, "http://")
	_, body := getWith(t, base+"/whoami", "Host", "evil.example", "X-Forwarded-Host", "evil.example",
		"X-Forwarded-Proto", "https", "X-Forwarded-For", "203.0.113.9")
	if want := "http://" + own + " from 127.0.0.1"; body != want {
		t.Errorf("untrusted client: %q, want %q", body, want)
	}

	cfg := testConfig()
	cfg.TrustedProxies = "127.0.0.1"
	proxied := hostEcho(t, cfg)
	_, body = getWith(t, proxied+"/whoami", "X-Forwarded-Host", "registry.example", "X-Forwarded-Proto", "https",
		"X-Forwarded-For", "203.0.113.9")
	if want := "https://registry.example from 203.0.113.9"; body != want {
		t.Errorf("trusted proxy: %q, want %q", body, want)
	}
}

func TestEveryResponseForbidsCachingAndSniffing(t *testing.T) {
	base := hostEcho(t, testConfig())
	for _, path := range []string{"/whoami", "/healthz", "/nowhere", "/fail"} {
		res, _ := getWith(t, base+path)
		for name, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
			if got := res.Header.Get(name); got != want {
				t.Errorf("%s: %s %q, want %q", path, name, got, want)
			}
		}
	}
}

// A client's X-Request-Id is never echoed: the server's own id is the one quoted to it.
func TestClientRequestIDIsNotEchoed(t *testing.T) {
	base := hostEcho(t, testConfig())
	forged := "<script>alert(1)</script>"
	res, body := getWith(t, base+"/fail", "X-Request-Id", forged)
	if res.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", res.StatusCode)
	}
	id := res.Header.Get(echo.HeaderXRequestID)
	if id == "" || id == forged || strings.Contains(body, "script") || !strings.Contains(body, id) {
		t.Errorf("request id %q, body %s", id, body)
	}
}

func TestCORSOnlyForConfiguredOrigins(t *testing.T) {
	closed := hostEcho(t, testConfig())
	if res, _ := getWith(t, closed+"/whoami", "Origin", "https://app.example.org"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("with no origins configured, CORS allowed %q", res.Header.Get("Access-Control-Allow-Origin"))
	}
	cfg := testConfig()
	cfg.CORSOrigins = "https://app.example.org"
	open := hostEcho(t, cfg)
	if res, _ := getWith(t, open+"/whoami", "Origin", "https://app.example.org"); res.Header.Get("Access-Control-Allow-Origin") != "https://app.example.org" {
		t.Errorf("a configured origin was not allowed: %v", res.Header)
	}
	if res, _ := getWith(t, open+"/whoami", "Origin", "https://evil.example"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin was allowed: %q", res.Header.Get("Access-Control-Allow-Origin"))
	}
	cfg.CORSOrigins = "*"
	if err := cfg.Validate(); err == nil {
		t.Error("a wildcard CORS origin was accepted")
	}
}

func TestServesTLS(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cfg := testConfig()
	cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cfg.TLSCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(cfg.TLSKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	base := strings.Replace(hostEcho(t, cfg), "http://", "https://", 1)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := client.Get(base + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !strings.HasPrefix(string(body), "https://") {
		t.Errorf("over TLS the scheme is %q", body)
	}
	cfg.TLSKey = ""
	if err := cfg.Validate(); err == nil {
		t.Error("a certificate without a key was accepted")
	}
}
