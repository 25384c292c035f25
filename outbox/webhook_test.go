package outbox_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// The headline: a receiver that is unreachable for a quarter of an hour, then answers 503 until
// the hour is up, gets every digest exactly once after it comes back, within the back-off cap.
// (An attempt at T after the first gets a delay of at most 2T + 30 s, so every message is tried
// again within the 503 phase, whatever the jitter.)
func TestReceiverDownForAnHourGetsEveryDigestOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	logs := &logBuffer{}
	d := outbox.New(db, outbox.Config{}, clk.Now, newLogger(logs))

	// A loopback port nothing listens on until the receiver starts there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rcv := newReceiver(clk, http.StatusServiceUnavailable)

	msgs := digests(5, "http://"+addr+"/hook?token=url-credential")
	enqueue(t, db, t0, msgs...)

	const maxBackoff = time.Hour // the default
	up := t0.Add(time.Hour)
	var delivered int
	var end time.Time
	for now := t0; now.Before(t0.Add(4 * time.Hour)); now = now.Add(time.Minute) {
		clk.Set(now)
		switch now.Sub(t0) {
		case 15 * time.Minute:
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listening on %s again: %v", addr, err)
			}
			srv := &http.Server{Handler: rcv}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
		case time.Hour:
			rcv.SetStatus(http.StatusNoContent)
		}
		pass, err := d.DeliverDue(ctx)
		if err != nil {
			t.Fatalf("pass at %s: %v", now, err)
		}
		if pass.Failed != 0 {
			t.Fatalf("pass at %s gave up on %d messages", now, pass.Failed)
		}
		if pass.Delivered > 0 && now.Before(up) {
			t.Fatalf("pass at %s delivered %d while the receiver was down", now, pass.Delivered)
		}
		delivered += pass.Delivered
		if delivered == len(msgs) {
			end = now
			break
		}
	}
	if delivered != len(msgs) {
		t.Fatalf("delivered %d of %d messages by %s", delivered, len(msgs), clk.Now())
	}
	// Each message's last failure was before `up`, and no delay exceeds the cap; one more
	// minute for the pass that notices.
	if limit := up.Add(maxBackoff + time.Minute); end.After(limit) {
		t.Errorf("last delivery at %s, want by %s", end, limit)
	}

	got := rcv.Requests()
	if len(got) != len(msgs) {
		t.Errorf("receiver got %d keys, want %d", len(got), len(msgs))
	}
	for _, m := range msgs {
		ok := accepted(got[m.Key])
		if len(ok) != 1 {
			t.Errorf("%s accepted %d times, want once", m.Key, len(ok))
			continue
		}
		r := ok[0]
		if string(r.body) != string(m.Body) || r.urlPath != "/hook" ||
			r.header.Get("Content-Type") != "application/fhir+json" ||
			r.header.Get("Authorization") != "Bearer hook-credential" ||
			!strings.HasPrefix(r.header.Get("User-Agent"), "cartreg") {
			t.Errorf("%s arrived as %s %q with headers %v", m.Key, r.urlPath, r.body, r.header)
		}

		st := status(t, db, m.Key)
		as := attempts(t, db, m.Key)
		if st.State != outbox.StateDelivered || st.DeliveredAt == nil || !st.DeliveredAt.Equal(r.at) ||
			st.LastError != "" || st.NextAttemptAt != nil || st.Attempts != len(as) {
			t.Errorf("%s: status %+v after %d attempts", m.Key, st, len(as))
		}
		if strings.Contains(st.Target, "credential") {
			t.Errorf("listed target %q shows the URL's query", st.Target)
		}
		var refused, unavailable int
		for i, a := range as {
			last := i == len(as)-1
			if a.Attempt != i+1 || a.OK != last {
				t.Errorf("%s attempt %d: %+v", m.Key, i+1, a)
			}
			switch {
			case last:
				if a.Status != http.StatusNoContent || a.Error != "" || !a.At.Equal(r.at) {
					t.Errorf("%s: delivering attempt %+v", m.Key, a)
				}
			case a.At.Before(t0.Add(15 * time.Minute)):
				if a.Status != 0 || !strings.Contains(a.Error, "refused") {
					t.Errorf("%s: attempt while nothing listened: %+v", m.Key, a)
				}
				refused++
			default:
				if a.Status != http.StatusServiceUnavailable || !strings.Contains(a.Error, "503") {
					t.Errorf("%s: attempt while the receiver answered 503: %+v", m.Key, a)
				}
				unavailable++
			}
			if i > 0 && a.At.Sub(as[i-1].At) > maxBackoff+time.Minute {
				t.Errorf("%s: %s between attempts %d and %d", m.Key, a.At.Sub(as[i-1].At), i, i+1)
			}
		}
		if refused == 0 || unavailable == 0 || unavailable != len(got[m.Key])-1 {
			t.Errorf("%s: %d refused and %d unavailable attempts recorded, receiver saw %d requests",
				m.Key, refused, unavailable, len(got[m.Key]))
		}
	}
	failedList, err := outbox.List(ctx, db, outbox.Filter{State: outbox.StateFailed})
	if err != nil || len(failedList) != 0 {
		t.Errorf("failed messages: %v (%v)", failedList, err)
	}

	// Another day of passes sends nothing more.
	for now := end; now.Before(end.Add(24 * time.Hour)); now = now.Add(time.Hour) {
		clk.Set(now)
		if pass, err := d.DeliverDue(ctx); err != nil || pass != (outbox.Pass{}) {
			t.Fatalf("pass at %s after all were delivered: %+v, %v", now, pass, err)
		}
	}

	log := logs.String()
	for _, secret := range []string{"PATIENT-DATA", "credential"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}
	if !strings.Contains(log, "key="+msgs[0].Key) || !strings.Contains(log, "target="+addr) {
		t.Errorf("the log does not name the key and target host:\n%s", log)
	}

	pruned, err := outbox.PruneDelivered(ctx, db, end.Add(time.Second))
	if err != nil || pruned != int64(len(msgs)) {
		t.Errorf("PruneDelivered = %d, %v; want %d", pruned, err, len(msgs))
	}
	if as := attempts(t, db, msgs[0].Key); len(as) != 0 {
		t.Errorf("a pruned message kept %d attempts", len(as))
	}
}

func TestEnqueueIsIdempotentAndTransactional(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	rcv := newReceiver(clk, http.StatusOK)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)

	first := digests(1, srv.URL)[0]
	second := first
	second.Kind = "other"
	second.Body = []byte("second")
	enqueue(t, db, t0, first)
	enqueue(t, db, t0.Add(time.Minute), second, second)
	if st := status(t, db, first.Key); st.Kind != "digest" || !st.CreatedAt.Equal(t0) {
		t.Errorf("after enqueueing the key again: %+v", st)
	}

	// A message enqueued in a transaction that rolls back was never there.
	rollback := errors.New("rollback")
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := outbox.Enqueue(ctx, tx, outbox.Message{Key: "rolled-back", Kind: "digest",
			Channel: outbox.ChannelWebhook, Target: srv.URL, Body: []byte("x")}); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if list, err := outbox.List(ctx, db, outbox.Filter{}); err != nil || len(list) != 1 || list[0].Key != first.Key {
		t.Fatalf("messages after the rollback: %+v (%v)", list, err)
	}

	d := outbox.New(db, outbox.Config{}, clk.Now, quiet)
	if pass, err := d.DeliverDue(ctx); err != nil || pass.Delivered != 1 {
		t.Fatalf("pass: %+v, %v", pass, err)
	}
	if got := rcv.Requests(); len(got) != 1 || len(got[first.Key]) != 1 || string(got[first.Key][0].body) != string(first.Body) {
		t.Errorf("receiver got %+v, want the first message's body once", got)
	}
	// Enqueueing a delivered key again does not send it again.
	enqueue(t, db, t0.Add(time.Hour), first)
	clk.Set(t0.Add(time.Hour))
	if pass, err := d.DeliverDue(ctx); err != nil || pass != (outbox.Pass{}) {
		t.Errorf("pass after re-enqueueing a delivered key: %+v, %v", pass, err)
	}
}

func TestEnqueueRefusesMessagesThatCouldNeverBeSent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	valid := outbox.Message{Key: "ok", Kind: "digest", Channel: outbox.ChannelWebhook, Target: "https://hooks.example/x"}
	for _, tc := range []struct {
		name string
		edit func(*outbox.Message)
	}{
		{"no key", func(m *outbox.Message) { m.Key = "" }},
		{"no kind", func(m *outbox.Message) { m.Kind = "" }},
		{"unknown channel", func(m *outbox.Message) { m.Channel = "sms" }},
		{"ftp target", func(m *outbox.Message) { m.Target = "ftp://hooks.example/x" }},
		{"relative target", func(m *outbox.Message) { m.Target = "/x" }},
		{"header with a line break", func(m *outbox.Message) { m.Headers = map[string]string{"X-A": "1\r\nX-B: 2"} }},
		{"header name with a space", func(m *outbox.Message) { m.Headers = map[string]string{"X A": "1"} }},
		{"bad content type", func(m *outbox.Message) { m.ContentType = "application/" }},
		{"bad address", func(m *outbox.Message) { m.Channel, m.Target = outbox.ChannelEmail, "coordinator at site" }},
	} {
		bad := valid
		bad.Key = "bad"
		tc.edit(&bad)
		err := outbox.Enqueue(ctx, db, valid, bad)
		if !errors.Is(err, outbox.ErrInvalidMessage) {
			t.Errorf("%s: Enqueue = %v, want ErrInvalidMessage", tc.name, err)
		}
	}
	if list, err := outbox.List(ctx, db, outbox.Filter{}); err != nil || len(list) != 0 {
		t.Errorf("refused calls stored %+v (%v)", list, err)
	}
	email := outbox.Message{Key: "mail", Kind: "digest", Channel: outbox.ChannelEmail,
		Target: "Coordinator <c@site.example>, d@site.example"}
	if err := outbox.Enqueue(ctx, db, valid, email); err != nil {
		t.Errorf("valid messages refused: %v", err)
	}
}

// Two replicas passing over the same due messages at the same time send each exactly once,
// and do so side by side: each skips the message the other is sending.
func TestReplicasNeverSendAMessageTwice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	rcv := newReceiver(clk, http.StatusAccepted)
	// The first two requests wait for each other (for 5 s at most): they are in flight
	// together only if the replicas send side by side.
	var arrivals, inFlight, maxInFlight atomic.Int32
	met := make(chan struct{})
	rcv.wait = func() {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
		}
		switch arrivals.Add(1) {
		case 1:
			select {
			case <-met:
			case <-time.After(5 * time.Second):
			}
		case 2:
			close(met)
		}
		time.Sleep(time.Millisecond)
	}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)

	msgs := digests(40, srv.URL)
	enqueue(t, db, t0, msgs...)

	replicas := []*outbox.Deliverer{
		outbox.New(db, outbox.Config{Batch: 7}, clk.Now, quiet),
		outbox.New(db, outbox.Config{Batch: 7}, clk.Now, quiet),
	}
	counts := make([]int, len(replicas))
	errs := make([]error, len(replicas))
	var wg sync.WaitGroup
	for i, d := range replicas {
		wg.Go(func() {
			for {
				pass, err := d.DeliverDue(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				counts[i] += pass.Delivered
				if pass == (outbox.Pass{}) {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if maxInFlight.Load() < 2 {
		t.Error("the replicas never sent side by side")
	}
	if counts[0]+counts[1] != len(msgs) || counts[0] == 0 || counts[1] == 0 {
		t.Errorf("replicas delivered %v, want %d in all, some by each", counts, len(msgs))
	}
	got := rcv.Requests()
	for _, m := range msgs {
		if n := len(got[m.Key]); n != 1 {
			t.Errorf("%s sent %d times", m.Key, n)
		}
	}
	if len(rcv.overlaps) != 0 {
		t.Errorf("sent while already in flight: %v", rcv.overlaps)
	}
}

// A message that keeps failing (a 4xx, retried all the same) gets a last attempt when the
// give-up period ends, is then marked failed, stays listed, and is not retried.
func TestGiveUpAfterMarksFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	rcv := newReceiver(clk, http.StatusNotFound)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	const giveUp = 2 * time.Hour
	d := outbox.New(db, outbox.Config{GiveUpAfter: giveUp}, clk.Now, quiet)
	m := digests(1, srv.URL)[0]
	enqueue(t, db, t0, m)

	var failedAt time.Time
	for now := t0; now.Before(t0.Add(3 * time.Hour)); now = now.Add(time.Minute) {
		clk.Set(now)
		pass, err := d.DeliverDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pass.Delivered != 0 {
			t.Fatalf("pass at %s delivered", now)
		}
		if pass.Failed == 1 {
			if !failedAt.IsZero() {
				t.Fatalf("failed again at %s", now)
			}
			failedAt = now
		}
	}
	if failedAt.Before(t0.Add(giveUp)) || failedAt.After(t0.Add(giveUp+time.Minute)) {
		t.Fatalf("gave up at %s, want when %s had passed", failedAt, giveUp)
	}
	st := status(t, db, m.Key)
	as := attempts(t, db, m.Key)
	if st.State != outbox.StateFailed || st.FailedAt == nil || !st.FailedAt.Equal(failedAt) ||
		st.NextAttemptAt != nil || st.DeliveredAt != nil || !strings.Contains(st.LastError, "404") ||
		st.Attempts != len(as) || len(as) < 5 {
		t.Errorf("status %+v after %d attempts", st, len(as))
	}
	for _, a := range as {
		if a.OK || a.Status != http.StatusNotFound {
			t.Errorf("attempt %+v", a)
		}
	}
	if last := as[len(as)-1]; !last.At.Equal(failedAt) {
		t.Errorf("last attempt at %s, want at the give-up %s", last.At, failedAt)
	}
	if n := len(rcv.Requests()[m.Key]); n != len(as) {
		t.Errorf("receiver got %d requests, %d attempts recorded", n, len(as))
	}
	failedList, err := outbox.List(ctx, db, outbox.Filter{State: outbox.StateFailed, Kind: "digest"})
	if err != nil || len(failedList) != 1 || failedList[0].Key != m.Key {
		t.Errorf("failed listing: %+v (%v)", failedList, err)
	}
	if pending, err := outbox.List(ctx, db, outbox.Filter{State: outbox.StatePending}); err != nil || len(pending) != 0 {
		t.Errorf("pending listing: %+v (%v)", pending, err)
	}

	// It is not retried, however late.
	rcv.SetStatus(http.StatusOK)
	clk.Set(t0.Add(30 * 24 * time.Hour))
	if pass, err := d.DeliverDue(ctx); err != nil || pass != (outbox.Pass{}) {
		t.Errorf("pass after giving up: %+v, %v", pass, err)
	}
	if n := len(rcv.Requests()[m.Key]); n != len(as) {
		t.Errorf("retried after giving up: %d requests", n)
	}
	if pruned, err := outbox.PruneDelivered(ctx, db, clk.Now()); err != nil || pruned != 0 {
		t.Errorf("PruneDelivered removed %d failed messages (%v)", pruned, err)
	}
}

// A redirect is a failed attempt: followed, a POST would become a GET.
func TestRedirectIsNotADelivery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	var redirected sync.Map
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/new", http.StatusFound) })
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) { redirected.Store(r.Method, true) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	m := digests(1, srv.URL+"/old")[0]
	enqueue(t, db, t0, m)

	d := outbox.New(db, outbox.Config{}, clk.Now, quiet)
	if pass, err := d.DeliverDue(ctx); err != nil || pass.Retrying != 1 {
		t.Fatalf("pass: %+v, %v", pass, err)
	}
	if as := attempts(t, db, m.Key); len(as) != 1 || as[0].OK || as[0].Status != http.StatusFound {
		t.Errorf("attempts %+v", as)
	}
	redirected.Range(func(method, _ any) bool {
		t.Errorf("the redirect was followed with %s", method)
		return true
	})
	st := status(t, db, m.Key)
	if st.State != outbox.StatePending || st.NextAttemptAt == nil || !st.NextAttemptAt.After(t0) ||
		st.NextAttemptAt.After(t0.Add(30*time.Second)) {
		t.Errorf("status %+v, want due again within the initial back-off", st)
	}
}

// Run passes until its context ends, and passes again at once after a full batch, so a
// backlog larger than a batch drains without waiting for the interval.
func TestRunDrainsABacklogAndStops(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	rcv := newReceiver(clk, http.StatusOK)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	msgs := digests(5, srv.URL)
	enqueue(t, db, t0, msgs...)

	d := outbox.New(db, outbox.Config{Batch: 2}, clk.Now, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { d.Run(ctx, time.Hour); close(stopped) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(rcv.Requests()) < len(msgs) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := len(rcv.Requests()); n != len(msgs) {
		t.Errorf("Run delivered %d of %d messages in its first round", n, len(msgs))
	}
	if err := outbox.EnqueueAt(context.Background(), db, time.Time{}, msgs[0]); !errors.Is(err, outbox.ErrInvalidMessage) {
		t.Errorf("EnqueueAt with no time = %v, want ErrInvalidMessage", err)
	}
}
