package followup_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/outbox"
)

// receiver is a coordinators' system: it can be down, and it records what it took.
type receiver struct {
	mu       sync.Mutex
	down     bool
	attempts int
	digests  map[string][]string // delivery key -> Task ids of the digest's Bundle
	owners   map[string]string   // delivery key -> X-Cartreg-Owner
	tasks    []string            // Subscription notifications: the Task ids
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.attempts++
	if rc.down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var body struct {
		ResourceType, ID string
		Entry            []struct{ Resource struct{ ID string } }
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch body.ResourceType {
	case "Bundle":
		key := r.Header.Get(outbox.HeaderDelivery)
		for _, e := range body.Entry {
			rc.digests[key] = append(rc.digests[key], e.Resource.ID)
		}
		rc.owners[key] = r.Header.Get("X-Cartreg-Owner")
	case "Task":
		rc.tasks = append(rc.tasks, body.ID)
	}
}

func (rc *receiver) setDown(down bool) {
	rc.mu.Lock()
	rc.down = down
	rc.mu.Unlock()
}

// loopbackHooks lets Subscriptions notify the tests' receivers, on loopback.
var loopbackHooks, _ = outbox.ParseAllowList([]string{"127.0.0.1"})

// Each coordinator is told of new and newly overdue Tasks once, by a digest that survives the
// receiver being down for an hour; a Subscription hears of each Task the scheduler writes.
func TestDigestsReachADownReceiverOnceItIsBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	rc := &receiver{digests: map[string][]string{}, owners: map[string]string{}}
	hook := httptest.NewServer(rc)
	defer hook.Close()

	north := w.post(map[string]any{"resourceType": "Organization", "name": "North Hospital"})[0]
	south := w.post(map[string]any{"resourceType": "Organization", "name": "South Hospital"})[0]
	coordinator := w.post(map[string]any{"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Okafor"}}})[0]
	w.owners[north[len("Organization/"):]] = coordinator
	planner := w.h.App.FollowUp
	w.now = date("2025-01-06")
	w.post(map[string]any{"resourceType": "Subscription", "status": "requested", "reason": "coordinator's system",
		"criteria": "Task?owner=" + coordinator + "&status=requested",
		"channel":  map[string]any{"type": "rest-hook", "endpoint": hook.URL, "payload": "application/fhir+json"}})
	var northInf, southInf []string
	for range 3 {
		_, _, inf := w.enrol(north, "2025-01-06")
		northInf = append(northInf, inf)
	}
	_, _, inf := w.enrol(south, "2025-01-06")
	southInf = append(southInf, inf)

	deliverer := outbox.New(w.db, outbox.Config{SubscriptionEndpoints: loopbackHooks}, func() time.Time { return w.now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	day := func(on string) {
		t.Helper()
		w.now = date(on).Add(6 * time.Hour)
		if _, err := planner.Run(ctx, w.now); err != nil {
			t.Fatal(err)
		}
		if _, err := planner.Digests(ctx, w.now, followup.DigestConfig{Webhook: hook.URL}); err != nil {
			t.Fatal(err)
		}
	}

	// Day 9 (month 1 lead time): four new Tasks, told while the receiver is down for an hour.
	rc.setDown(true)
	day("2025-01-15")
	for minute := 0; minute <= 120; minute++ {
		if minute == 60 {
			rc.setDown(false)
		}
		if _, err := deliverer.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(time.Minute)
	}
	byOwner := map[string][]string{}
	for key, ids := range rc.digests {
		byOwner[rc.owners[key]] = append(byOwner[rc.owners[key]], ids...)
	}
	m1 := func(infusions []string) []string {
		var ids []string
		for _, inf := range infusions {
			ids = append(ids, w.tasks(inf)["m1"].id)
		}
		sort.Strings(ids)
		return ids
	}
	for _, ids := range byOwner {
		sort.Strings(ids)
	}
	if len(rc.digests) != 2 || !slices.Equal(byOwner[coordinator], m1(northInf)) || !slices.Equal(byOwner[south], m1(southInf)) {
		t.Fatalf("digests after an hour down: %v (owners %v); want %s: %v, %s: %v", rc.digests, rc.owners,
			coordinator, m1(northInf), south, m1(southInf))
	}
	if rc.attempts < 4 {
		t.Errorf("%d attempts: the receiver was down for an hour and should have been tried again", rc.attempts)
	}
	if !slices.Equal(sorted(rc.tasks), m1(northInf)) {
		t.Errorf("Subscription notifications %v, want the coordinator's new Tasks %v", rc.tasks, m1(northInf))
	}

	// The next days bring nothing new until month 1 turns overdue (day 46): then one digest
	// per owner again, with just those Tasks; a patient assessed in time is not in it.
	w.assess(w.patientOf(northInf[0]), northInf[0], "2025-02-05", "lugano-cmr")
	before := len(rc.digests)
	for _, d := range []string{"2025-01-16", "2025-01-17", "2025-02-20"} {
		day(d)
		if _, err := deliverer.DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(rc.digests) != before {
		t.Errorf("digests on days with nothing new: %v", rc.digests)
	}
	day("2025-02-21")
	if _, err := deliverer.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	overdue := map[string]int{}
	for key, ids := range rc.digests {
		overdue[rc.owners[key]] += len(ids)
	}
	if len(rc.digests) != before+2 || overdue[coordinator] != 3+2 || overdue[south] != 1+1 {
		t.Errorf("after month 1 turned overdue: %v", rc.digests)
	}
}

// patientOf is the patient an infusion was given to.
func (w *world) patientOf(infusion string) string {
	w.t.Helper()
	var p string
	if err := w.db.QueryRow(context.Background(), `SELECT 'Patient/' || patient_id FROM registry_infusion
		WHERE resource_type || '/' || resource_id = $1`, infusion).Scan(&p); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// By e-mail, a coordinator's digest goes to their Practitioner's e-mail address and names the
// patients and visits, overdue ones first.
func TestDigestByEmail(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	site := w.post(map[string]any{"resourceType": "Organization", "name": "North Hospital"})[0]
	coordinator := w.post(map[string]any{"resourceType": "Practitioner",
		"telecom": []any{map[string]any{"system": "phone", "value": "+1 555 0100"},
			map[string]any{"system": "email", "value": "a.okafor@north.example"}}})[0]
	w.owners[site[len("Organization/"):]] = coordinator
	planner := w.h.App.FollowUp
	w.now = date("2025-01-06")
	late, _, _ := w.enrol(site, "2024-11-01") // month 1 (2024-11-24 to 2024-12-16) missed, month 3 open
	w.enrol(site, "2025-01-06")               // month 1 coming up
	w.put(map[string]any{"resourceType": "Patient", "id": late[len("Patient/"):], "gender": "female", "birthDate": "1970-03-03",
		"managingOrganization": ref(site), "name": []any{map[string]any{"given": []any{"Grace"}, "family": "Hopper"}}})
	w.now = date("2025-01-15")
	if _, err := planner.Run(ctx, w.now); err != nil {
		t.Fatal(err)
	}
	if n, err := planner.Digests(ctx, w.now, followup.DigestConfig{Email: true}); err != nil || n != 1 {
		t.Fatalf("digests queued: %d, %v", n, err)
	}
	var target, subject, body string
	if err := w.db.QueryRow(ctx, `SELECT target, subject, convert_from(body, 'UTF8') FROM delivery_message
		WHERE channel = 'email'`).Scan(&target, &subject, &body); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(body, "\n")
	if target != "a.okafor@north.example" || subject != "CAR-T follow-up: 1 overdue, 2 new" ||
		len(lines) < 5 || !strings.HasPrefix(lines[2], "OVERDUE  Month 1: Grace Hopper, window 2024-11-24 to 2024-12-16") ||
		!strings.HasPrefix(lines[3], "NEW      Month 3: Grace Hopper, window 2025-01-16 to 2025-02-13") ||
		!strings.HasPrefix(lines[4], "NEW      Month 1: (no name), window 2025-01-29 to 2025-02-20") {
		t.Errorf("e-mail digest to %s, %q:\n%s", target, subject, body)
	}
}
