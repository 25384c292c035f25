package subscription_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func restHook(endpoint string, headers ...any) map[string]any {
	channel := map[string]any{"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}
	if len(headers) > 0 { // an empty header list is no value, which R4 refuses (ele-1)
		channel["header"] = headers
	}
	return map[string]any{"resourceType": "Subscription", "status": "requested", "reason": "test",
		"criteria": "Task?owner=Practitioner/7", "channel": channel}
}

// Without an allow-list rest-hook is off: a Subscription is refused with a 422 that says how
// to turn it on, and nothing is stored.
func TestRestHookIsOffUntilAllowed(t *testing.T) {
	h := newHooked(t, func(string) []string { return nil })
	before := h.count()
	status, out := h.send("POST", "/Subscription", restHook(h.receiver.URL+"/hook"))
	text := mustJSON(out)
	if status != http.StatusUnprocessableEntity || !strings.Contains(text, "Subscription.channel.type") ||
		!strings.Contains(text, "CARTREG_SUBSCRIPTION_ENDPOINTS") || h.count() != before {
		t.Errorf("%d %s", status, text)
	}
}

// Endpoints are only those the allow-list names: internal addresses, the cloud metadata
// service and other ports of an allowed host are refused at create time, located.
func TestRestHookEndpointsOutsideTheAllowListAreRefused(t *testing.T) {
	h := newHooked(t, func(receiver string) []string { return []string{receiver + "/hooks/", "hooks.example.org"} })
	u, _ := url.Parse(h.receiver.URL)
	for _, endpoint := range []string{
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/hook",
		"http://localhost:" + u.Port() + "/hooks/x",
		h.receiver.URL + "/other",
		h.receiver.URL + "/hooks/../admin",
		h.receiver.URL + "/hooks/%2e%2e/admin",
		"http://" + u.Hostname() + ":1/hooks/x",
		"https://evil.example.org/",
		"http://hooks.example.org.evil.net/",
	} {
		before := h.count()
		status, out := h.send("POST", "/Subscription", restHook(endpoint))
		if status != http.StatusUnprocessableEntity || !strings.Contains(mustJSON(out), "Subscription.channel.endpoint") || h.count() != before {
			t.Errorf("%s: %d %v", endpoint, status, out)
		}
	}
	for _, endpoint := range []string{h.receiver.URL + "/hooks/a", "https://hooks.example.org/x", "http://hooks.example.org:8080/"} {
		if status, out := h.send("POST", "/Subscription", restHook(endpoint)); status != http.StatusCreated {
			t.Errorf("%s: %d %v", endpoint, status, out)
		}
	}
}

// Header lines are "Name: value" with no control characters (no CR/LF to inject headers) and
// no hop-by-hop or transport fields; each refusal names the line, never its value.
func TestRestHookHeaderLinesAreChecked(t *testing.T) {
	h := newHooked(t, nil)
	for _, line := range []string{
		"X-Api-Key: abc\r\nX-Injected: 1",
		"X-Api-Key: abc\nX-Injected: 1",
		"X-Api-Key: a\x00b",
		"X-Api-Key: a\x7fb",
		"Bad Name: 1",
		": no name",
		"no colon",
		"Host: internal.example",
		"transfer-encoding: chunked",
		"Content-Length: 0",
		"Connection: close",
		"Upgrade: websocket",
		"Proxy-Authorization: Basic eA==",
		"TE: trailers",
		"Trailer: X",
		"Keep-Alive: timeout=5",
	} {
		before := h.count()
		status, out := h.send("POST", "/Subscription", restHook(h.receiver.URL+"/hook", "Authorization: Bearer ok", line))
		text := mustJSON(out)
		// A NUL is refused by the FHIR parser already (400), the rest by the Subscription check.
		if (status != http.StatusUnprocessableEntity && status != http.StatusBadRequest) ||
			!strings.Contains(text, "Subscription.channel.header[1]") || h.count() != before {
			t.Errorf("%q: %d %s", line, status, text)
		}
		if strings.Contains(text, "abc") || strings.Contains(text, "eA==") {
			t.Errorf("%q: the refusal repeats the header's value: %s", line, text)
		}
	}
	if status, out := h.send("POST", "/Subscription", restHook(h.receiver.URL+"/hook", "Authorization: Bearer ok", "X-Site:\tnorth")); status != http.StatusCreated {
		t.Errorf("good headers: %d %v", status, out)
	}
}

// The reproduction: a Subscription whose stored channel the outbox cannot send (a header with
// CR/LF, as was accepted before header lines were checked; an endpoint the allow-list no
// longer has; criteria that no longer parse) made every matching write a 500. Now the write
// succeeds, nothing is queued for it, and the Subscription is in error with the reason.
func TestABrokenSubscriptionNeverFailsAWrite(t *testing.T) {
	h := newHooked(t, nil)
	ctx := context.Background()
	for name, breakIt := range map[string]string{
		"header with CR/LF":   `UPDATE subscription_active SET headers = '{"X-A": "1\r\nX-B: 2"}' WHERE subscription_id = $1`,
		"hop-by-hop header":   `UPDATE subscription_active SET headers = '{"Transfer-Encoding": "chunked"}' WHERE subscription_id = $1`,
		"endpoint not listed": `UPDATE subscription_active SET endpoint = 'http://10.0.0.1/hook' WHERE subscription_id = $1`,
		"criteria unknown":    `UPDATE subscription_active SET criteria = 'Task?ownr=Practitioner/7' WHERE subscription_id = $1`,
	} {
		t.Run(name, func(t *testing.T) {
			status, sub := h.send("POST", "/Subscription", restHook(h.receiver.URL+"/hook"))
			if status != http.StatusCreated {
				t.Fatalf("creating: %d %v", status, sub)
			}
			id := sub["id"].(string)
			if _, err := h.db.Exec(ctx, breakIt, id); err != nil {
				t.Fatal(err)
			}
			queued := h.queued()
			for range 2 {
				if status, out := h.send("POST", "/Task", task("Practitioner/7", "requested")); status != http.StatusCreated {
					t.Fatalf("a write matching the broken Subscription: %d %v", status, out)
				}
			}
			if got := h.queued(); got != queued {
				t.Errorf("%d notifications queued for a broken Subscription", got-queued)
			}
			_, cur := h.send("GET", "/Subscription/"+id, nil)
			if cur["status"] != "error" || cur["error"] == nil || cur["error"] == "" {
				t.Errorf("the broken Subscription: %v", cur)
			}
			if strings.Contains(mustJSON(cur), "X-B") {
				t.Errorf("the recorded error repeats a header: %v", cur["error"])
			}
			if n := h.srv.Count(`SELECT count(*) FROM subscription_active WHERE subscription_id = $1`, id); n != 0 {
				t.Errorf("the broken Subscription is still matched")
			}
			// It stays off; the client fixes it by writing it again, and it is checked anew.
			delete(cur, "meta")
			delete(cur, "error")
			cur["status"] = "requested"
			if status, out := h.send("PUT", "/Subscription/"+id, cur); status != http.StatusOK {
				t.Errorf("re-requesting it: %d %v", status, out)
			}
			h.send("DELETE", "/Subscription/"+id, nil)
		})
	}
}

// At delivery time the address is checked again: an allowed host name that resolves to an
// internal address is not connected to unless the allow-list names that address.
func TestDeliveryRefusesInternalAddressesNotNamed(t *testing.T) {
	h := newHooked(t, func(receiver string) []string {
		u, _ := url.Parse(receiver)
		return []string{"localhost:" + u.Port()}
	})
	u, _ := url.Parse(h.receiver.URL)
	status, sub := h.send("POST", "/Subscription", restHook("http://localhost:"+u.Port()+"/hook"))
	if status != http.StatusCreated {
		t.Fatalf("creating: %d %v", status, sub)
	}
	if status, out := h.send("POST", "/Task", task("Practitioner/7", "requested")); status != http.StatusCreated {
		t.Fatalf("%d %v", status, out)
	}
	if got := h.deliver(); len(got) != 0 {
		t.Errorf("delivered to a loopback address the allow-list does not name: %+v", got)
	}
	var lastError string
	if err := h.db.QueryRow(context.Background(), `SELECT coalesce(last_error, '') FROM delivery_message WHERE kind = 'subscription'`).Scan(&lastError); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(lastError, "address refused") {
		t.Errorf("the delivery's error: %q", lastError)
	}
}

func (h *hooked) queued() int {
	return h.srv.Count(`SELECT count(*) FROM delivery_message WHERE kind = 'subscription'`)
}
