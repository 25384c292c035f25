package outbox_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var t0 = time.Date(2025, 3, 14, 6, 0, 0, 0, time.UTC)

// clock is the simulated time every Deliverer of a test reads.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// logBuffer collects a Deliverer's log, to check what it says and does not say.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var quiet = newLogger(io.Discard)

// request is one request a receiver got.
type request struct {
	at      time.Time // on the simulated clock
	status  int       // what the receiver answered
	header  http.Header
	body    []byte
	urlPath string
}

// receiver is a webhook endpoint that answers with the status it is set to and remembers every
// request by its X-Cartreg-Delivery key.
type receiver struct {
	clock *clock
	// wait, when set, is called in each request before it is answered.
	wait func()

	mu       sync.Mutex
	status   int
	requests map[string][]request
	inFlight map[string]int
	overlaps []string // keys that arrived while a request with the same key was in flight
}

func newReceiver(c *clock, status int) *receiver {
	return &receiver{clock: c, status: status, requests: map[string][]request{}, inFlight: map[string]int{}}
}

func (rc *receiver) SetStatus(status int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.status = status
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(outbox.HeaderDelivery)
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.inFlight[key]++
	if rc.inFlight[key] > 1 {
		rc.overlaps = append(rc.overlaps, key)
	}
	rc.mu.Unlock()
	if rc.wait != nil {
		rc.wait()
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.inFlight[key]--
	rc.requests[key] = append(rc.requests[key], request{at: rc.clock.Now(), status: rc.status,
		header: r.Header.Clone(), body: body, urlPath: r.URL.Path})
	w.WriteHeader(rc.status)
}

// Requests returns a copy of what the receiver got, by key.
func (rc *receiver) Requests() map[string][]request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string][]request, len(rc.requests))
	for k, v := range rc.requests {
		out[k] = append([]request(nil), v...)
	}
	return out
}

// accepted returns the requests for key the receiver answered with a 2xx.
func accepted(reqs []request) []request {
	var out []request
	for _, r := range reqs {
		if r.status >= 200 && r.status < 300 {
			out = append(out, r)
		}
	}
	return out
}

func enqueue(t *testing.T, db *pgxpool.Pool, at time.Time, msgs ...outbox.Message) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), db, func(tx pgx.Tx) error {
		return outbox.EnqueueAt(context.Background(), tx, at, msgs...)
	}); err != nil {
		t.Fatal(err)
	}
}

func digests(n int, target string) []outbox.Message {
	msgs := make([]outbox.Message, n)
	for i := range msgs {
		msgs[i] = outbox.Message{
			Key:         "digest:coordinator-" + strconv.Itoa(i) + ":2025-03-14",
			Kind:        "digest",
			Channel:     outbox.ChannelWebhook,
			Target:      target,
			Headers:     map[string]string{"Authorization": "Bearer hook-credential"},
			ContentType: "application/fhir+json",
			Body:        []byte(`{"resourceType":"Bundle","note":"PATIENT-DATA-` + strconv.Itoa(i) + `"}`),
		}
	}
	return msgs
}

func status(t *testing.T, db *pgxpool.Pool, key string) outbox.Status {
	t.Helper()
	list, err := outbox.List(context.Background(), db, outbox.Filter{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("List(key %q) = %d messages, want 1", key, len(list))
	}
	return list[0]
}

func attempts(t *testing.T, db *pgxpool.Pool, key string) []outbox.Attempt {
	t.Helper()
	list, err := outbox.ListAttempts(context.Background(), db, key)
	if err != nil {
		t.Fatal(err)
	}
	return list
}
