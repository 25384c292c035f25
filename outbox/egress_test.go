package outbox_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestAllowList(t *testing.T) {
	t.Parallel()
	a, err := outbox.ParseAllowList([]string{
		" https://hooks.example.org/cartreg/ ", "http://h2.example.org/exact", "plain.example.org",
		"ported.example.org:8443", "*.wild.example.net", "10.20.0.0/16", "192.168.1.7:9000", "[::1]:8080", "",
	})
	if err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]bool{
		"https://hooks.example.org/cartreg/":           true,
		"https://hooks.example.org/cartreg/a/b?x=1":    true,
		"https://HOOKS.example.org:443/cartreg/a":      true,
		"https://hooks.example.org/cartreg":            false, // the prefix ends in "/"
		"https://hooks.example.org/cartreg/../admin":   false,
		"https://hooks.example.org/cartreg/%2E%2E/x":   false,
		"https://hooks.example.org/cartreg%2f..%2fx":   false,
		"http://hooks.example.org/cartreg/":            false, // another scheme
		"https://hooks.example.org:8443/cartreg/":      false, // another port
		"https://hooks.example.org/other":              false,
		"http://h2.example.org/exact":                  true,
		"http://h2.example.org/exact/sub":              true,
		"http://h2.example.org/exactly":                false,
		"https://plain.example.org:9999/anything":      true,
		"https://plain.example.org.evil.net/":          false,
		"https://ported.example.org:8443/x":            true,
		"https://ported.example.org/x":                 false,
		"https://a.wild.example.net/":                  true,
		"https://wild.example.net/":                    false,
		"http://10.20.3.4:81/x":                        true,
		"http://10.21.0.1/":                            false,
		"http://192.168.1.7:9000/x":                    true,
		"http://192.168.1.7:9001/x":                    false,
		"http://[::1]:8080/x":                          true,
		"http://[::ffff:192.168.1.7]:9000/x":           true,
		"http://169.254.169.254/latest/meta-data/":     false,
		"ftp://plain.example.org/":                     false,
		"/relative":                                    false,
		"https://user:pw@plain.example.org/with-login": true,
	} {
		if got := a.Allows(target); got != want {
			t.Errorf("Allows(%q) = %v, want %v", target, got, want)
		}
	}
	for addr, want := range map[string]bool{
		"93.184.216.34:443":     true,
		"[2606:4700::1111]:443": true,
		"127.0.0.1:80":          false,
		"[::1]:8080":            true, // named by [::1]:8080
		"[::1]:8081":            false,
		"10.0.0.1:80":           false,
		"10.20.9.9:1234":        true, // in 10.20.0.0/16
		"172.16.0.1:80":         false,
		"192.168.1.7:9000":      true, // named
		"192.168.1.7:22":        false,
		"192.168.1.8:9000":      false,
		"169.254.169.254:80":    false,
		"100.64.0.1:80":         false,
		"0.0.0.0:80":            false,
		"[::ffff:10.0.0.1]:80":  false,
		"[::ffff:10.20.0.1]:80": true,
		"[fd00::1]:80":          false,
		"[fe80::1]:80":          false,
		"[64:ff9b::a00:1]:80":   false,
		"224.0.0.1:80":          false,
	} {
		if got := a.AllowsAddress(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("AllowsAddress(%s) = %v, want %v", addr, got, want)
		}
	}
	var none *outbox.AllowList
	if !none.Empty() || none.Allows("https://plain.example.org/") || none.AllowsAddress(netip.MustParseAddrPort("127.0.0.1:80")) {
		t.Error("a nil AllowList allows something")
	}
	for _, bad := range []string{"https://u:p@x.example/", "https://x.example/?q=1", "ftp://x.example/", "not a host", "https://x.example/a/../b"} {
		if _, err := outbox.ParseAllowList([]string{bad}); err == nil {
			t.Errorf("ParseAllowList(%q) accepted it", bad)
		}
	}
}

func TestParseHeaderLine(t *testing.T) {
	t.Parallel()
	if name, value, err := outbox.ParseHeaderLine("Authorization:  Bearer x "); err != nil || name != "Authorization" || value != "Bearer x" {
		t.Errorf("%q %q %v", name, value, err)
	}
	for _, line := range []string{"A: 1\r\nB: 2", "A: 1\nB", "A: \x01", "A B: 1", "nocolon", ": v", "HOST: x", "proxy-authorization: x", "Te: x"} {
		if _, _, err := outbox.ParseHeaderLine(line); err == nil {
			t.Errorf("ParseHeaderLine(%q) accepted it", line)
		}
	}
}

// Subscription notifications go only where the allow-list says, checked again when they are
// sent: a target it no longer has fails at once; a host that resolves to a loopback address
// it does not name fails the attempt (and is retried, as DNS may change); a named address
// is delivered to. Digests, whose target the administrator sets, are not restricted.
func TestSubscriptionDeliveriesStayWithinTheAllowList(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	c := &clock{now: t0}
	rc := newReceiver(c, http.StatusOK)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	// Another receiver on loopback, reached by a host name only.
	other := httptest.NewServer(rc)
	defer other.Close()
	u, _ := url.Parse(other.URL)

	allow, err := outbox.ParseAllowList([]string{srv.URL + "/named/", "localhost:" + u.Port()})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(key, target string) outbox.Message {
		return outbox.Message{Key: key, Kind: outbox.KindSubscription, Channel: outbox.ChannelWebhook, Target: target}
	}
	enqueue(t, db, t0,
		msg("named", srv.URL+"/named/x"),
		msg("unlisted", srv.URL+"/unlisted"),
		msg("by-name", "http://localhost:"+u.Port()+"/by-name"),
		outbox.Message{Key: "digest", Kind: "digest", Channel: outbox.ChannelWebhook, Target: srv.URL + "/digest"})
	d := outbox.New(db, outbox.Config{SubscriptionEndpoints: allow}, c.Now, quiet)
	if _, err := d.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	got := rc.Requests()
	if len(got["named"]) != 1 || len(got["digest"]) != 1 || len(got["unlisted"]) != 0 || len(got["by-name"]) != 0 {
		t.Errorf("requests: %v", got)
	}
	if s := status(t, db, "unlisted"); s.State != outbox.StateFailed || !strings.Contains(s.LastError, "allow-list") || s.Attempts != 1 {
		t.Errorf("unlisted target: %+v", s)
	}
	if s := status(t, db, "by-name"); s.State != outbox.StatePending || !strings.Contains(s.LastError, "address refused") {
		t.Errorf("a host name resolving to loopback: %+v", s)
	}

	// With no allow-list at all, nothing of a Subscription's is sent.
	enqueue(t, db, t0, msg("no-list", srv.URL+"/named/y"))
	if _, err := outbox.New(db, outbox.Config{}, c.Now, quiet).DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status(t, db, "no-list"); s.State != outbox.StateFailed || len(rc.Requests()["no-list"]) != 0 {
		t.Errorf("without an allow-list: %+v", s)
	}
}
