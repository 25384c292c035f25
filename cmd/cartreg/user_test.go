package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/web"
)

// The web pages' session and sign-in limits are read from flags and the environment, and a
// limit that would read as "none" is refused.
func TestWebSettings(t *testing.T) {
	clearCartregEnv(t)
	t.Setenv("CARTREG_SIGNIN_ATTEMPTS", "3")
	cfg, err := parseServe(t, "-session-idle-timeout", "10m")
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Web; w.SessionIdleTimeout != 10*time.Minute || w.SignInAttempts != 3 || w.SessionLifetime != 12*time.Hour || w.SignInWindow != 15*time.Minute {
		t.Errorf("web settings %+v", w)
	}
	if err := cfg.validateWeb(); err != nil {
		t.Errorf("valid settings refused: %v", err)
	}
	cfg.Web.SignInAttempts = 0
	if err := cfg.validateWeb(); err == nil || !strings.Contains(err.Error(), "-signin-attempts") {
		t.Errorf("no sign-in limit: %v", err)
	}
	cfg.Web.SignInAttempts, cfg.Web.SessionIdleTimeout = 3, 24*time.Hour
	if err := cfg.validateWeb(); err == nil || !strings.Contains(err.Error(), "-session-idle-timeout") {
		t.Errorf("an idle timeout beyond the lifetime: %v", err)
	}
}

// The README's way to the pages: a user made with `cartreg user add` signs in at /signin and
// is sent to their page; a user made without -password-stdin is given a password to use.
func TestUserAddAndSignIn(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, testBaseURL}
	server := startCartreg(t, env, "serve")
	base := server.waitReady(time.Minute)

	cmd := exec.Command(binary, "user", "add", "-name", "alice", "-role", "researcher", "-password-stdin")
	cmd.Env = childEnv(env...)
	cmd.Stdin = strings.NewReader("a long enough password\n")
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "password:") {
		t.Fatalf("user add -password-stdin: %v\n%s", err, out)
	}
	made := stdoutOf(t, env, "user", "add", "-name", "bob", "-role", "admin")
	m := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(made)
	if m == nil {
		t.Fatalf("user add printed no password:\n%s", made)
	}
	if out := stdoutOf(t, env, "user", "list"); !strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Errorf("user list:\n%s", out)
	}
	for name, pw := range map[string]string{"alice": "a long enough password", "bob": m[1]} {
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := client.Get(base + "/signin")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(body))
		if csrf == nil {
			t.Fatalf("no sign-in form:\n%s", body)
		}
		res, err = client.PostForm(base+"/signin", neturl.Values{"csrf": {csrf[1]}, "name": {name}, "password": {pw}, "next": {"/"}})
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
			t.Errorf("%s signing in: %d %s", name, res.StatusCode, res.Header.Get("Location"))
		}
	}
}

// The pages offer the API's OpenID Connect provider, as the client the API's audience names
// unless told otherwise, with a secret read from a file; -web-oidc=false offers passwords only.
func TestWebOIDCSettings(t *testing.T) {
	clearCartregEnv(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("pages-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	provider := []string{"-oidc-issuer", "https://login.example/realms/staff", "-oidc-audience", "cartreg",
		"-oidc-role-claim", "groups", "-oidc-roles", "cart=coordinator"}
	cfg, err := parseServe(t, provider...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if o := cfg.Web.OIDC; o.Issuer != "https://login.example/realms/staff" || o.ClientID != "cartreg" || o.ClientSecret != "" || o.Timeout != web.DefaultOIDCSignInTimeout {
		t.Errorf("defaults: %+v", o)
	}
	t.Setenv("CARTREG_WEB_OIDC_CLIENT_SECRET_FILE", secret)
	cfg, err = parseServe(t, append(provider, "-web-oidc-client-id", "cartreg-pages", "-web-oidc-name", "St Elsewhere")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if o := cfg.Web.OIDC; o.ClientID != "cartreg-pages" || o.ClientSecret != "pages-secret" || o.Name != "St Elsewhere" {
		t.Errorf("given: %+v", o)
	}
	cfg, err = parseServe(t, append(provider, "-web-oidc=false")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-web-oidc-client-secret-file") {
		t.Errorf("a secret for a sign-in turned off: %v", err)
	}
	t.Setenv("CARTREG_WEB_OIDC_CLIENT_SECRET_FILE", "")
	cfg, err = parseServe(t, append(provider, "-web-oidc=false")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil || cfg.Web.OIDC.Issuer != "" {
		t.Errorf("-web-oidc=false: %v, issuer %q", err, cfg.Web.OIDC.Issuer)
	}
	cfg, err = parseServe(t, append(provider, "-web-oidc-signin-timeout", "2h")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-web-oidc-signin-timeout") {
		t.Errorf("a two-hour sign-in: %v", err)
	}
}
