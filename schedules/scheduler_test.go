package schedules

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// replica is a second process's view of the same database: a pool of its own.
func replica(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// tally counts runs per slot, from any goroutine.
type tally struct {
	mu    sync.Mutex
	slots map[time.Time]int
}

func (ta *tally) record(slot time.Time) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if ta.slots == nil {
		ta.slots = map[time.Time]int{}
	}
	ta.slots[slot]++
}

func (ta *tally) snapshot() map[time.Time]int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	out := make(map[time.Time]int, len(ta.slots))
	for k, v := range ta.slots {
		out[k] = v
	}
	return out
}

func TestReplicasOnRealCronRunEachSlotOnce(t *testing.T) {
	url := pgtest.NewDatabaseURL(t)
	var runs tally
	job := Job{Name: "tick", Spec: "* * * * * *", Run: func(ctx context.Context, slot time.Time) error {
		runs.record(slot)
		time.Sleep(150 * time.Millisecond) // long enough for the other replica to collide
		return nil
	}}
	var schedulers []*Scheduler
	for i := 0; i < 3; i++ {
		s := New(replica(t, url), quiet, Options{Seconds: true})
		if err := s.Add(job); err != nil {
			t.Fatal(err)
		}
		schedulers = append(schedulers, s)
	}
	for _, s := range schedulers {
		s.Start()
	}
	time.Sleep(3500 * time.Millisecond)
	for _, s := range schedulers {
		s.Stop(context.Background())
	}

	got := runs.snapshot()
	if len(got) < 2 {
		t.Fatalf("only %d slots ran in 3.5 s of a per-second schedule", len(got))
	}
	for slot, n := range got {
		if n != 1 {
			t.Errorf("slot %s ran %d times across three replicas", slot.Format(time.RFC3339Nano), n)
		}
		if !slot.Equal(slot.Truncate(time.Second)) {
			t.Errorf("slot %s is not the scheduled activation time", slot.Format(time.RFC3339Nano))
		}
	}
	var recorded int
	if err := replica(t, url).QueryRow(context.Background(), "SELECT count(*) FROM schedule_run WHERE job = 'tick' AND finished_at IS NOT NULL").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != len(got) {
		t.Fatalf("schedule_run has %d finished slots, the job ran %d", recorded, len(got))
	}
}

func TestConcurrentRunsOfOneSlotRunItOnce(t *testing.T) {
	url := pgtest.NewDatabaseURL(t)
	var runs tally
	job := Job{Name: "followup", Run: func(ctx context.Context, slot time.Time) error {
		runs.record(slot)
		time.Sleep(20 * time.Millisecond)
		return nil
	}}
	slot := time.Date(2027, 3, 1, 6, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		s := New(replica(t, url), quiet, Options{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.RunSlot(context.Background(), job, slot); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := runs.snapshot()[slot]; n != 1 {
		t.Fatalf("slot ran %d times, want once", n)
	}

	// Later, the same slot again (a repeated `schedule run --at`): nothing happens.
	ran, err := New(replica(t, url), quiet, Options{}).RunSlot(context.Background(), job, slot)
	if err != nil || ran {
		t.Fatalf("re-run of a finished slot: ran=%v err=%v", ran, err)
	}
	// The next slot runs.
	next := slot.AddDate(0, 0, 1)
	if ran, err := New(replica(t, url), quiet, Options{}).RunSlot(context.Background(), job, next); err != nil || !ran {
		t.Fatalf("next slot: ran=%v err=%v", ran, err)
	}
}

func TestAFailedOrPanickingRunIsRecorded(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := New(db, quiet, Options{})
	slot := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	boom := errors.New("receiver down")

	ran, err := s.RunSlot(context.Background(), Job{Name: "digest", Run: func(context.Context, time.Time) error { return boom }}, slot)
	if !ran || !errors.Is(err, boom) {
		t.Fatalf("ran=%v err=%v, want the job's error", ran, err)
	}
	ran, err = s.RunSlot(context.Background(), Job{Name: "crash", Run: func(context.Context, time.Time) error { panic("nil map") }}, slot)
	if !ran || err == nil {
		t.Fatalf("panicking job: ran=%v err=%v", ran, err)
	}
	rows, err := db.Query(context.Background(), "SELECT job, error FROM schedule_run ORDER BY job")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var job, msg string
		if err := rows.Scan(&job, &msg); err != nil {
			t.Fatal(err)
		}
		got[job] = msg
	}
	if got["digest"] != "receiver down" || got["crash"] == "" {
		t.Fatalf("recorded errors = %v", got)
	}
}

func TestABadSpecIsRefused(t *testing.T) {
	s := New(nil, quiet, Options{})
	if err := s.Add(Job{Name: "x", Spec: "every tuesday", Run: func(context.Context, time.Time) error { return nil }}); err == nil {
		t.Fatal("an unparseable spec was accepted")
	}
	if err := s.Add(Job{Name: "x", Spec: "30 5 * * *", Run: func(context.Context, time.Time) error { return nil }}); err != nil {
		t.Fatalf("a standard daily spec: %v", err)
	}
}

// A replica that starts after downtime runs the slot it missed, once, whatever the time zone.
func TestCatchUpRunsTheMissedSlotOnce(t *testing.T) {
	db := replica(t, pgtest.NewDatabaseURL(t))
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	now := time.Date(2027, 3, 1, 4, 0, 0, 0, berlin) // before today's 05:30
	var runs tally
	job := Job{Name: "daily", Spec: "30 5 * * *", Run: func(ctx context.Context, slot time.Time) error {
		runs.record(slot)
		return nil
	}}
	s := New(db, quiet, Options{Location: berlin, Now: func() time.Time { return now }})
	want := time.Date(2027, 2, 28, 5, 30, 0, 0, berlin)
	if slot, ok, err := s.LatestSlot(job.Spec, now); err != nil || !ok || !slot.Equal(want) {
		t.Fatalf("latest slot before %s: %s, %v, %v; want %s", now, slot, ok, err, want)
	}
	for i, wantRan := range []bool{true, false} {
		ran, err := New(db, quiet, Options{Location: berlin, Now: func() time.Time { return now }}).CatchUp(context.Background(), job)
		if err != nil || ran != wantRan {
			t.Errorf("start-up %d: ran %v, %v; want %v", i+1, ran, err, wantRan)
		}
	}
	if got := runs.snapshot(); len(got) != 1 || got[want] != 1 {
		t.Errorf("runs: %v", got)
	}
	if _, ok, _ := s.LatestSlot("0 0 29 2 *", time.Date(2027, 3, 1, 0, 0, 0, 0, berlin)); ok {
		t.Error("a slot found more than a year back")
	}
}
