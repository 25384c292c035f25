package subscription_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// hooked is the FHIR server over real HTTP with Subscriptions on, and a receiver that records
// every notification.
type hooked struct {
	t         *testing.T
	endpoints *outbox.AllowList
	base      string
	db        *pgxpool.Pool
	srv       *apptest.Harness
	now       time.Time
	mu        sync.Mutex
	received  []notification
	receiver  *httptest.Server
}

type notification struct {
	header http.Header
	body   map[string]any
}

// newHooked starts the server with the allow-list allow(receiver URL) returns; nil allow
// lists the receiver's URL.
func newHooked(t *testing.T, allow func(receiver string) []string) *hooked {
	h := &hooked{t: t, now: time.Date(2027, 3, 1, 6, 0, 0, 0, time.UTC)}
	h.receiver = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		n := notification{header: r.Header.Clone()}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &n.body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		h.mu.Lock()
		h.received = append(h.received, n)
		h.mu.Unlock()
	}))
	t.Cleanup(h.receiver.Close)
	entries := []string{h.receiver.URL + "/"}
	if allow != nil {
		entries = allow(h.receiver.URL)
	}
	var err error
	if h.endpoints, err = outbox.ParseAllowList(entries); err != nil {
		t.Fatal(err)
	}
	srv := apptest.New(t, apptest.WithMaxBody("1M"), apptest.WithClock(func() time.Time { return h.now }),
		apptest.WithConfig(func(c *app.Config) {
			c.FHIR.DefaultCount, c.FHIR.MaxCount = 10, 100
			c.FHIR.Bundles = fhir.BundleConfig{MaxEntries: 100, ReferentialIntegrity: false}
			c.Subscriptions.Endpoints = h.endpoints
		}))
	h.db, h.base, h.srv = srv.DB, srv.URL+"/fhir", srv
	return h
}

func (h *hooked) send(method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	raw, _ := json.Marshal(body)
	res := h.srv.DoURL(method, h.base+path, raw, "Content-Type", "application/json")
	var out map[string]any
	_ = json.Unmarshal(res.Body, &out)
	return res.Status, out
}

// deliver runs the deliverer once and returns what arrived since the last call.
func (h *hooked) deliver() []notification {
	h.t.Helper()
	if _, err := outbox.New(h.db, outbox.Config{SubscriptionEndpoints: h.endpoints}, func() time.Time { return h.now }, slog.New(slog.NewTextHandler(io.Discard, nil))).
		DeliverDue(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.received
	h.received = nil
	return out
}

func task(owner, status string) map[string]any {
	return map[string]any{"resourceType": "Task", "status": status, "intent": "order",
		"owner": map[string]any{"reference": owner}, "description": "Year 1 follow-up"}
}

func TestRestHookOnTasks(t *testing.T) {
	h := newHooked(t, nil)
	status, sub := h.send("POST", "/Subscription", map[string]any{"resourceType": "Subscription", "status": "requested",
		"reason": "Dr Okafor's follow-up worklist", "criteria": "Task?owner=Practitioner/7&status=requested",
		"channel": map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL + "/hook",
			"payload": "application/fhir+json", "header": []any{"Authorization: Bearer s3cret"}}})
	if status != http.StatusCreated {
		t.Fatalf("creating the Subscription: %d %v", status, sub)
	}
	id := sub["id"].(string)
	if _, cur := h.send("GET", "/Subscription/"+id, nil); cur["status"] != "active" {
		t.Errorf("the Subscription after it was accepted: %v", cur)
	}

	_, mine := h.send("POST", "/Task", task("Practitioner/7", "requested"))
	h.send("POST", "/Task", task("Practitioner/8", "requested")) // someone else's
	h.send("POST", "/Task", task("Practitioner/7", "draft"))     // not requested
	got := h.deliver()
	if len(got) != 1 || got[0].body["id"] != mine["id"] || got[0].header.Get("Authorization") != "Bearer s3cret" ||
		got[0].header.Get("Content-Type") != "application/fhir+json" {
		t.Fatalf("notifications after three Tasks: %+v", got)
	}

	// A change that still matches notifies again; one that no longer matches does not.
	mine["description"] = "Year 1 follow-up: patient called"
	delete(mine, "meta")
	h.send("PUT", "/Task/"+mine["id"].(string), mine)
	mine["status"] = "completed"
	h.send("PUT", "/Task/"+mine["id"].(string), mine)
	if got := h.deliver(); len(got) != 1 || got[0].body["description"] != "Year 1 follow-up: patient called" {
		t.Errorf("notifications after two updates: %+v", got)
	}

	t.Run("of a Bundle's entries, those that match", func(t *testing.T) {
		entry := func(owner, status string) map[string]any {
			return map[string]any{"resource": task(owner, status), "request": map[string]any{"method": "POST", "url": "Task"}}
		}
		status, out := h.send("POST", "/", map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
			entry("Practitioner/7", "requested"), entry("Practitioner/8", "requested"), entry("Practitioner/7", "requested")}})
		if status != http.StatusOK {
			t.Fatalf("transaction: %d %v", status, out)
		}
		var want []string
		for _, i := range []int{0, 2} {
			loc := out["entry"].([]any)[i].(map[string]any)["response"].(map[string]any)["location"].(string)
			want = append(want, strings.Split(loc, "/")[1])
		}
		got := h.deliver()
		var ids []string
		for _, n := range got {
			ids = append(ids, n.body["id"].(string))
		}
		slices.Sort(ids)
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("notified of %v, want %v", ids, want)
		}
	})

	t.Run("without a payload the POST has no body", func(t *testing.T) {
		h.send("POST", "/Subscription", map[string]any{"resourceType": "Subscription", "status": "requested",
			"reason": "ping", "criteria": "Task?owner=Practitioner/9",
			"channel": map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL + "/ping"}})
		h.send("POST", "/Task", task("Practitioner/9", "requested"))
		if got := h.deliver(); len(got) != 1 || got[0].body != nil {
			t.Errorf("notifications: %+v", got)
		}
	})

	t.Run("switched off or ended, a Subscription is silent", func(t *testing.T) {
		_, cur := h.send("GET", "/Subscription/"+id, nil)
		delete(cur, "meta")
		cur["end"] = "2027-02-28T00:00:00Z"
		if status, out := h.send("PUT", "/Subscription/"+id, cur); status != http.StatusOK {
			t.Fatalf("ending the Subscription: %d %v", status, out)
		}
		h.send("POST", "/Task", task("Practitioner/7", "requested"))
		if got := h.deliver(); len(got) != 0 {
			t.Errorf("an ended Subscription notified: %+v", got)
		}
	})

	for name, c := range map[string]struct {
		body  map[string]any
		where string
	}{
		"websocket channel": {map[string]any{"type": "websocket"}, "Subscription.channel.type"},
		"relative endpoint": {map[string]any{"type": "rest-hook", "endpoint": "/hook"}, "Subscription.channel.endpoint"},
		"XML payload":       {map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL, "payload": "application/fhir+xml"}, "Subscription.channel.payload"},
		"bad header":        {map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL, "header": []any{"no colon"}}, "Subscription.channel.header[0]"},
	} {
		t.Run("refused: "+name, func(t *testing.T) {
			before := h.count()
			status, out := h.send("POST", "/Subscription", map[string]any{"resourceType": "Subscription", "status": "requested",
				"reason": "test", "criteria": "Task?status=requested", "channel": c.body})
			if status != http.StatusUnprocessableEntity || !strings.Contains(mustJSON(out), c.where) || h.count() != before {
				t.Errorf("%d %v", status, out)
			}
		})
	}
	t.Run("refused: criteria with an unknown parameter", func(t *testing.T) {
		status, out := h.send("POST", "/Subscription", map[string]any{"resourceType": "Subscription", "status": "requested",
			"reason": "test", "criteria": "Task?ownr=Practitioner/7",
			"channel": map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL}})
		if status != http.StatusUnprocessableEntity || !strings.Contains(mustJSON(out), "Subscription.criteria") {
			t.Errorf("%d %v", status, out)
		}
	})
}

func (h *hooked) count() int {
	var n int
	if err := h.db.QueryRow(context.Background(), `SELECT count(*) FROM resource_version`).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func mustJSON(v any) string {
	raw, _ := json.Marshal(v)
	return string(raw)
}

// The server answers a Subscription's create and update with what it stored: active, once it
// has accepted a requested one, not the status the client sent.
func TestWriteAnswersWithTheStoredStatus(t *testing.T) {
	h := newHooked(t, nil)
	body := map[string]any{"resourceType": "Subscription", "status": "requested", "reason": "test",
		"criteria": "Task?status=requested", "channel": map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL + "/hook"}}
	status, sub := h.send("POST", "/Subscription", body)
	if status != http.StatusCreated || sub["status"] != "active" {
		t.Fatalf("create: %d, status %v", status, sub["status"])
	}
	meta, _ := sub["meta"].(map[string]any)
	if meta["versionId"] != "2" {
		t.Errorf("create answered with version %v, not the stored 2", meta["versionId"])
	}
	id := sub["id"].(string)
	body["id"] = id
	status, sub = h.send("PUT", "/Subscription/"+id, body)
	if status != http.StatusOK || sub["status"] != "active" {
		t.Fatalf("update: %d, status %v", status, sub["status"])
	}
	if _, cur := h.send("GET", "/Subscription/"+id, nil); cur["meta"].(map[string]any)["versionId"] != sub["meta"].(map[string]any)["versionId"] {
		t.Errorf("the update answered with version %v, the store has %v", sub["meta"], cur["meta"])
	}
}

// A Subscription written in a transaction or batch Bundle is answered as it is stored: active,
// in the version the hook wrote, as a plain POST answers it.
func TestASubscriptionInABundleIsAnsweredActive(t *testing.T) {
	h := newHooked(t, nil)
	sub := func() map[string]any {
		return map[string]any{"resourceType": "Subscription", "status": "requested", "reason": "in a Bundle",
			"criteria": "Task?owner=Practitioner/7",
			"channel":  map[string]any{"type": "rest-hook", "endpoint": h.receiver.URL + "/hook", "payload": "application/fhir+json"}}
	}
	for _, kind := range []string{"transaction", "batch"} {
		status, out := h.send("POST", "", map[string]any{"resourceType": "Bundle", "type": kind, "entry": []any{
			map[string]any{"resource": sub(), "request": map[string]any{"method": "POST", "url": "Subscription"}}}})
		if status != http.StatusOK {
			t.Fatalf("%s: %d %v", kind, status, out)
		}
		resp := out["entry"].([]any)[0].(map[string]any)["response"].(map[string]any)
		location, _ := resp["location"].(string)
		parts := strings.Split(location, "/")
		if resp["etag"] != `W/"2"` || len(parts) < 4 || parts[len(parts)-1] != "2" {
			t.Errorf("%s: the entry answers etag %v, location %v; want the version the hook wrote, 2", kind, resp["etag"], location)
			continue
		}
		if _, cur := h.send("GET", "/Subscription/"+parts[len(parts)-3], nil); cur["status"] != "active" {
			t.Errorf("%s: stored %v", kind, cur["status"])
		}
	}
}
