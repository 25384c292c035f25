package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DBTX is what the package's queries run on: the pool, a connection or a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Config tunes a Recorder.
type Config struct {
	// Retention is how long events are kept; PruneExpired deletes older sealed ones. Default
	// six years, HIPAA's retention period for required documentation (45 CFR 164.316(b)(2)(i)).
	Retention time.Duration
	// QueueSize bounds the events Log holds before Log blocks. Default 10,000.
	QueueSize int
	// FlushInterval is the longest a logged event waits before its insert starts. Default 50 ms.
	FlushInterval time.Duration
	// BaseURL is the FHIR base clients use, for fullUrl and paging links; empty: from the request.
	BaseURL string
}

// DefaultRetention is six years.
const DefaultRetention = 6 * 365 * 24 * time.Hour

// batchSize is the most events one background insert writes.
const batchSize = 1000

func (c Config) withDefaults() Config {
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 10000
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 50 * time.Millisecond
	}
	return c
}

// Recorder writes audit events: inside a caller's transaction (Record) or queued and inserted
// in batches in the background (Log).
type Recorder struct {
	db     *pgxpool.Pool
	cfg    Config
	now    func() time.Time
	logger *slog.Logger

	queue   chan Event
	flushes chan chan error

	startOnce sync.Once
	stopOnce  sync.Once
	// mu lets Close wait for every Log that is handing an event to the queue, so none is put
	// there after the writer's last drain.
	mu       sync.RWMutex
	quit     chan struct{} // closed by Close: the writer drains and exits
	stopped  chan struct{} // closed by the writer when it stops taking events from the queue
	done     chan struct{} // closed when the writer has exited
	closeCtx context.Context
	closeErr error
}

// NewRecorder returns a recorder over db. now is its clock.
func NewRecorder(db *pgxpool.Pool, cfg Config, now func() time.Time, logger *slog.Logger) *Recorder {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Recorder{
		db: db, cfg: cfg, now: now, logger: logger,
		queue:   make(chan Event, cfg.QueueSize),
		flushes: make(chan chan error),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Config is the recorder's configuration, defaults filled in.
func (r *Recorder) Config() Config { return r.cfg }

const insertColumns = `event_id, recorded, action, interaction, outcome, agent_kind, agent_who,
	agent_role, source, request_id, entities, patients, event, content_hash`

// row is an event as the columns of audit_event, in insertColumns order.
func (r *Recorder) row(ev Event) (Event, []any, error) {
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	ev = normalize(ev, r.now)
	id, err := uuid.Parse(ev.ID)
	if err != nil {
		return ev, nil, fmt.Errorf("audit event id %q is not a UUID", ev.ID)
	}
	ev.ID = id.String()
	body, err := json.Marshal(ev)
	if err != nil {
		return ev, nil, fmt.Errorf("encoding an audit event: %w", err)
	}
	entities, patients := ev.Entities, ev.Patients
	if entities == nil {
		entities = []string{}
	}
	if patients == nil {
		patients = []string{}
	}
	return ev, []any{id, ev.Time, ev.Action, ev.Interaction, ev.Outcome, ev.Agent.Kind, ev.Agent.Who,
		ev.Agent.Role, ev.Source, ev.RequestID, entities, patients, string(body), contentHash(ev)}, nil
}

// Record writes ev inside the caller's transaction, so the record of a write commits or rolls
// back with the write.
func (r *Recorder) Record(ctx context.Context, tx pgx.Tx, ev Event) error {
	sql, args, err := r.Insert(ev)
	if err != nil {
		return err
	}
	if _, err = tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("recording an audit event: %w", err)
	}
	return nil
}

// Insert is the statement Record runs for ev, for a caller that sends it itself: the FHIR
// store's write hook queues it to go with the transaction's next statement, so that the
// record of a write costs no round trip of its own.
func (r *Recorder) Insert(ev Event) (sql string, args []any, err error) {
	if _, args, err = r.row(ev); err != nil {
		return "", nil, err
	}
	return `INSERT INTO audit_event (` + insertColumns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, args, nil
}

// Log queues ev for a batched insert in the background, so a read costs no extra round trip.
// When the queue is full Log waits (back-pressure): an event is never dropped. After Close,
// Log inserts the event itself.
func (r *Recorder) Log(ev Event) {
	// Stamped here, in the caller's goroutine: the time is when it happened, not when the
	// batch is written, and the clock is read where its owner reads it.
	if ev.Time.IsZero() {
		ev.Time = r.now()
	}
	r.mu.RLock()
	select {
	case <-r.stopped:
		r.mu.RUnlock()
		r.logDirect(ev)
		return
	default:
	}
	select {
	case r.queue <- ev:
		r.mu.RUnlock()
	case <-r.stopped:
		r.mu.RUnlock()
		r.logDirect(ev)
	}
}

func (r *Recorder) logDirect(ev Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.insert(ctx, []Event{ev}); err != nil {
		r.logger.Error("audit: writing an event after close failed", "error", err, "request_id", ev.RequestID)
	}
}

// Start starts the background writer of logged events. It runs until Close, or until ctx is
// cancelled, after writing what was queued.
func (r *Recorder) Start(ctx context.Context) {
	r.startOnce.Do(func() { go r.write(ctx) })
}

// Flush waits until every event logged before it has been inserted.
func (r *Recorder) Flush(ctx context.Context) error {
	r.Start(context.Background())
	ack := make(chan error, 1)
	select {
	case r.flushes <- ack:
	case <-r.done:
		return r.closeErr
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-ack:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close inserts every queued event and stops the writer. ctx bounds how long it keeps trying
// when the database fails; events it could not write are counted in the error.
func (r *Recorder) Close(ctx context.Context) error {
	r.Start(context.Background())
	r.stopOnce.Do(func() {
		r.closeCtx = ctx
		close(r.quit)
	})
	select {
	case <-r.done:
		return r.closeErr
	case <-ctx.Done():
		return fmt.Errorf("closing the audit recorder: %w", ctx.Err())
	}
}

// write is the background writer: it gathers queued events into batches, each inserted at most
// FlushInterval after its first event was taken, and retries a failed insert until it works.
func (r *Recorder) write(ctx context.Context) {
	defer close(r.done)
	batch := make([]Event, 0, batchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var pending []chan error // flushes answered after the next insert
	for {
		select {
		case ev := <-r.queue:
			batch = append(batch, ev)
			if len(batch) == 1 {
				timer.Reset(r.cfg.FlushInterval)
			}
			if len(batch) < batchSize {
				continue
			}
		case ack := <-r.flushes:
			batch = r.drainInto(batch)
			pending = append(pending, ack)
		case <-timer.C:
		case <-r.quit:
			r.stop(batch, r.closeCtx)
			return
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r.stop(batch, stopCtx)
			cancel()
			return
		}
		timer.Stop()
		var err error
		if len(batch) > 0 {
			err = r.insertRetrying(ctx, batch)
		}
		for _, ack := range pending {
			ack <- err
		}
		pending = pending[:0]
		if err != nil { // stopping: the events are handed to stop by the next turn
			continue
		}
		batch = batch[:0]
	}
}

// drainInto takes every event now queued.
func (r *Recorder) drainInto(batch []Event) []Event {
	for {
		select {
		case ev := <-r.queue:
			batch = append(batch, ev)
		default:
			return batch
		}
	}
}

// stop makes Log write directly from now on, waits for the Logs already handing an event to
// the queue, and inserts everything queued.
func (r *Recorder) stop(batch []Event, ctx context.Context) {
	close(r.stopped)
	// The lock is a barrier: taking it waits for the Logs in flight, and new ones see stopped.
	r.mu.Lock()
	//lint:ignore SA2001 an empty critical section is the point: nothing is guarded, only waited for
	r.mu.Unlock()
	batch = r.drainInto(batch)
	for len(batch) > 0 {
		n := min(len(batch), batchSize)
		if err := r.insertUntil(ctx, batch[:n]); err != nil {
			r.closeErr = fmt.Errorf("audit: %d logged events were not written: %w", len(batch), err)
			r.logger.Error("audit: events lost at close", "count", len(batch), "error", err)
			return
		}
		batch = batch[n:]
	}
}

// insertRetrying inserts batch, retrying with back-off while the database fails. It gives up
// only when the recorder is stopping (Close or ctx), leaving the batch to the final drain.
func (r *Recorder) insertRetrying(ctx context.Context, batch []Event) error {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := r.insert(ctx, batch)
		if err == nil {
			return nil
		}
		r.logger.Error("audit: inserting logged events failed; retrying", "count", len(batch), "error", err)
		select {
		case <-time.After(wait):
		case <-r.quit:
			return err
		case <-ctx.Done():
			return err
		}
	}
}

// insertUntil inserts batch, retrying until ctx ends.
func (r *Recorder) insertUntil(ctx context.Context, batch []Event) error {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := r.insert(ctx, batch)
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
	}
}

// insert writes events with one COPY: one statement, so all or none.
func (r *Recorder) insert(ctx context.Context, events []Event) error {
	rows := make([][]any, 0, len(events))
	for i := range events {
		ev, args, err := r.row(events[i])
		if err != nil { // a caller's id that is no UUID: keep the event under one of ours
			r.logger.Warn("audit: replacing an event id", "error", err, "request_id", ev.RequestID)
			events[i].ID = ""
			if ev, args, err = r.row(events[i]); err != nil {
				return err
			}
		}
		events[i] = ev // a retry keeps the id and time it was given
		rows = append(rows, args)
	}
	_, err := r.db.CopyFrom(ctx, pgx.Identifier{"audit_event"}, []string{"event_id", "recorded", "action",
		"interaction", "outcome", "agent_kind", "agent_who", "agent_role", "source", "request_id",
		"entities", "patients", "event", "content_hash"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("inserting %d audit events: %w", len(rows), err)
	}
	return nil
}
