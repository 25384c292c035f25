package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

// testBaseURL is the base URL the tests' servers and commands share, so the tokens `cartreg
// token` issues name the issuer the server expects (the listen address, port 0, cannot).
const testBaseURL = "CARTREG_BASE_URL=http://cartreg.test/fhir"

// stdoutOf runs cartreg and returns its standard output alone.
func stdoutOf(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = childEnv(env...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("cartreg %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// newClientToken registers a client with the commands the README gives and returns a token.
func newClientToken(t *testing.T, env []string, role string, extra ...string) string {
	t.Helper()
	var client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	args := append([]string{"client", "add", "-name", "test " + role, "-role", role, "-json"}, extra...)
	if err := json.Unmarshal([]byte(stdoutOf(t, env, args...)), &client); err != nil || client.ID == "" || client.Secret == "" {
		t.Fatalf("client add: %v %+v", err, client)
	}
	return strings.TrimSpace(stdoutOf(t, env, "token", "-client", client.ID))
}

// authGet GETs url with a bearer token.
func authGet(t *testing.T, token, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The README's way in: a client registered with `cartreg client add`, a token from `cartreg
// token`, and the server answering it; without one, 401. `cartreg audit verify` checks the
// trail those requests left, and finds an edited record.
func TestClientTokenAndAuditCommands(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, testBaseURL}
	server := startCartreg(t, env, "serve")
	base := server.waitReady(time.Minute)

	if res, err := http.Get(base + "/fhir/Patient"); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous search: %v %v", res, err)
	}
	admin := newClientToken(t, env, "admin")
	res := authGet(t, admin, base+"/fhir/Patient")
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("search with an admin token: %d", res.StatusCode)
	}
	researcher := newClientToken(t, env, "researcher")
	for path, want := range map[string]int{"/fhir/Patient": 403, "/registry/outcomes/response": 200} {
		res := authGet(t, researcher, base+path)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("researcher %s: %d, want %d", path, res.StatusCode, want)
		}
	}
	if out := stdoutOf(t, env, "client", "list"); !strings.Contains(out, "researcher") || !strings.Contains(out, "client_secret_basic") {
		t.Errorf("client list:\n%s", out)
	}
	if err := server.stop(syscall.SIGTERM); err != nil { // flushes and the last seal happens on the next start
		t.Fatalf("stopping: %v", err)
	}
	if out, err := runCartreg(t, env, "audit", "verify"); err != nil || !strings.Contains(out, "verifies") {
		t.Fatalf("audit verify of an untouched trail: %v\n%s", err, out)
	}
	if n := countsIn(t, url, `SELECT 'events', count(*) FROM audit_event`)["events"]; n < 4 {
		t.Fatalf("%d audit events after five requests", n)
	}
	execIn(t, url, `ALTER TABLE audit_event DISABLE TRIGGER USER`)
	execIn(t, url, `UPDATE audit_event SET agent_who = 'someone else' WHERE id = (SELECT min(id) FROM audit_event)`)
	if out, err := runCartreg(t, env, "audit", "verify"); err == nil || !strings.Contains(out, "does not verify") {
		t.Fatalf("audit verify of an edited trail: %v\n%s", err, out)
	}
}

func execIn(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
