package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes a Deliverer. Zero fields take their defaults.
type Config struct {
	// HTTPClient sends webhooks; default: one with a 10 s timeout. Unless it has a
	// CheckRedirect of its own, redirects are not followed. A client without a Timeout gets a
	// 10 s one per request, as the message's row stays locked during the send.
	HTTPClient *http.Client
	// SMTP is the mail server for the e-mail channel, which is off when SMTP.Host is "": e-mail
	// messages then fail their attempts (visibly) until they are given up.
	SMTP SMTPConfig
	// InitialBackoff is the delay after the first failed attempt; default 30 s.
	InitialBackoff time.Duration
	// MaxBackoff caps the delay between attempts; default 1 h.
	MaxBackoff time.Duration
	// GiveUpAfter is how long after enqueueing a failing message is retried before it is marked
	// failed; default 7 days.
	GiveUpAfter time.Duration
	// Batch is how many messages a pass handles at most; default 50.
	Batch int
	// SubscriptionEndpoints is where messages of KindSubscription, whose targets API clients
	// chose, may go. One whose target it does not allow fails at once, without a request, and
	// is not retried; one whose host resolves to an address it does not allow (see AllowList)
	// fails that attempt and is retried, as DNS may change. Nil allows none. Such messages
	// are sent by HTTPClient's settings with a dialer of our own and no proxy.
	SubscriptionEndpoints *AllowList
}

const defaultSendTimeout = 10 * time.Second

func (c Config) withDefaults() Config {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: defaultSendTimeout}
	}
	if c.HTTPClient.CheckRedirect == nil {
		client := *c.HTTPClient
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		c.HTTPClient = &client
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = 30 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Hour
	}
	if c.MaxBackoff < c.InitialBackoff {
		c.MaxBackoff = c.InitialBackoff
	}
	if c.GiveUpAfter <= 0 {
		c.GiveUpAfter = 7 * 24 * time.Hour
	}
	if c.Batch <= 0 {
		c.Batch = 50
	}
	if c.SMTP.Timeout <= 0 {
		c.SMTP.Timeout = 30 * time.Second
	}
	return c
}

// Deliverer sends the queued messages. Several, on several replicas, may share one database.
type Deliverer struct {
	db  *pgxpool.Pool
	cfg Config
	// guarded sends KindSubscription messages: HTTPClient, dialing only allowed addresses.
	guarded *http.Client
	now     func() time.Time
	logger  *slog.Logger
	jitter  func() float64 // in [0, 1)
}

// New returns a Deliverer on db; now is its clock, for every time it records and compares.
func New(db *pgxpool.Pool, cfg Config, now func() time.Time, logger *slog.Logger) *Deliverer {
	cfg = cfg.withDefaults()
	return &Deliverer{db: db, cfg: cfg, guarded: guardedClient(cfg.HTTPClient, cfg.SubscriptionEndpoints),
		now: now, logger: logger, jitter: rand.Float64}
}

// Pass counts what one DeliverDue pass did with the messages it claimed.
type Pass struct {
	Delivered int // sent, and marked delivered
	Retrying  int // failed, and due again later
	Failed    int // failed for the last time, and marked failed
}

func (p Pass) total() int { return p.Delivered + p.Retrying + p.Failed }

type outcome int

const (
	delivered outcome = iota
	retrying
	failed
)

// DeliverDue makes one pass: it claims the due messages, one at a time and at most Batch,
// skipping those another replica is sending, sends each, records the attempt, and marks the
// message delivered, or due again after a back-off, or failed once it has been failing for
// GiveUpAfter. A message is tried at most once per pass. The error is about the database or
// ctx; failed sends are counted, not returned.
func (d *Deliverer) DeliverDue(ctx context.Context) (Pass, error) {
	var pass Pass
	done := make([]int64, 0, d.cfg.Batch) // never nil: a NULL array would match no id
	for len(done) < d.cfg.Batch {
		id, out, ok, err := d.deliverNext(ctx, done)
		if err != nil {
			return pass, err
		}
		if !ok {
			break
		}
		done = append(done, id)
		switch out {
		case delivered:
			pass.Delivered++
		case retrying:
			pass.Retrying++
		case failed:
			pass.Failed++
		}
	}
	return pass, nil
}

// Run calls DeliverDue every interval until ctx ends, and again at once after a pass that
// filled its batch, so a backlog drains without waiting. The interval is real time; what the
// passes record is on the Deliverer's clock.
func (d *Deliverer) Run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		for {
			pass, err := d.DeliverDue(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				d.logger.Error("delivery pass failed", "error", err)
				break
			}
			if pass.total() > 0 {
				d.logger.Info("delivery pass", "delivered", pass.Delivered, "retrying", pass.Retrying, "failed", pass.Failed)
			}
			if pass.total() < d.cfg.Batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// message is a claimed delivery_message row.
type message struct {
	Message
	id        int64
	createdAt time.Time
	attempts  int
}

// sendResult is what one attempt came to: err is nil when the message was delivered; status
// is the HTTP status or SMTP reply code, 0 when there was none.
type sendResult struct {
	status int
	err    error
	// final is set when retrying cannot help: the message is marked failed at once.
	final bool
}

const claimSQL = `SELECT id, key, kind, channel, target, headers, content_type, subject, body, created_at, attempts
	FROM delivery_message
	WHERE next_attempt_at <= $1 AND id <> ALL($2)
	ORDER BY next_attempt_at, id
	LIMIT 1
	FOR UPDATE SKIP LOCKED`

// deliverNext claims the next due message not in skip, sends it and records the outcome, all
// in one transaction holding the message's row lock; ok is false when nothing is due.
func (d *Deliverer) deliverNext(ctx context.Context, skip []int64) (id int64, out outcome, ok bool, err error) {
	tx, err := d.db.Begin(ctx)
	if err != nil {
		return 0, 0, false, fmt.Errorf("starting a delivery: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	var m message
	err = tx.QueryRow(ctx, claimSQL, d.now(), skip).Scan(&m.id, &m.Key, &m.Kind, &m.Channel, &m.Target,
		&m.Headers, &m.ContentType, &m.Subject, &m.Body, &m.createdAt, &m.attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("claiming a due delivery: %w", err)
	}

	attempt := m.attempts + 1
	started := d.now()
	res := d.send(ctx, &m, started)
	finished := d.now()
	if res.err != nil && ctx.Err() != nil {
		// Cut short by our own shutdown, not the receiver: leave it unrecorded, and due.
		return 0, 0, false, ctx.Err()
	}

	// What was sent is recorded even if ctx ended meanwhile: an unrecorded delivery is repeated.
	record := context.WithoutCancel(ctx)
	var errText *string
	var next time.Time
	switch {
	case res.err == nil:
		out = delivered
		_, err = tx.Exec(record, `UPDATE delivery_message
			SET attempts = $2, next_attempt_at = NULL, delivered_at = $3, last_error = NULL WHERE id = $1`,
			m.id, attempt, finished)
	default:
		msg := res.err.Error()
		errText = &msg
		deadline := m.createdAt.Add(d.cfg.GiveUpAfter)
		if res.final || !finished.Before(deadline) {
			out = failed
			_, err = tx.Exec(record, `UPDATE delivery_message
				SET attempts = $2, next_attempt_at = NULL, failed_at = $3, last_error = $4 WHERE id = $1`,
				m.id, attempt, finished, msg)
			break
		}
		out = retrying
		next = finished.Add(backoff(attempt, d.cfg.InitialBackoff, d.cfg.MaxBackoff, d.jitter()))
		if next.After(deadline) {
			next = deadline // one last attempt when the give-up period ends
		}
		_, err = tx.Exec(record, `UPDATE delivery_message
			SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1`,
			m.id, attempt, next, msg)
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("recording delivery %q: %w", m.Key, err)
	}
	var status *int
	if res.status != 0 {
		status = &res.status
	}
	if _, err := tx.Exec(record, `INSERT INTO delivery_attempt
		(message_id, attempt, attempted_at, ok, status, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		m.id, attempt, started, res.err == nil, status, errText, finished.Sub(started).Milliseconds()); err != nil {
		return 0, 0, false, fmt.Errorf("recording attempt %d of delivery %q: %w", attempt, m.Key, err)
	}
	if err := tx.Commit(record); err != nil {
		return 0, 0, false, fmt.Errorf("recording delivery %q: %w", m.Key, err)
	}

	attrs := []any{"key", m.Key, "kind", m.Kind, "channel", m.Channel, "target", targetHost(m.Channel, m.Target),
		"attempt", attempt, "status", res.status}
	switch out {
	case delivered:
		d.logger.Info("delivered", attrs...)
	case retrying:
		d.logger.Warn("delivery failed; will retry", append(attrs, "error", res.err, "next_attempt", next)...)
	case failed:
		d.logger.Error("delivery failed; giving up", append(attrs, "error", res.err, "since", m.createdAt)...)
	}
	return m.id, out, true, nil
}

func (d *Deliverer) send(ctx context.Context, m *message, now time.Time) sendResult {
	switch m.Channel {
	case ChannelWebhook:
		return d.sendWebhook(ctx, m)
	case ChannelEmail:
		return d.sendEmail(ctx, m, now)
	}
	return sendResult{err: fmt.Errorf("unknown channel %q", m.Channel)}
}

// backoff is the delay after the n-th failed attempt (n ≥ 1): initial·2^(n-1), capped at
// limit, then moved to a point in its upper half chosen by jitter, a number in [0, 1).
// It never exceeds limit, so a receiver that comes back is tried within limit.
func backoff(n int, initial, limit time.Duration, jitter float64) time.Duration {
	d := initial
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + time.Duration(jitter*float64(d-d/2))
}
