package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// State is where a message stands.
type State string

// The states of a message.
const (
	StatePending   State = "pending"   // not delivered yet; due at NextAttemptAt
	StateDelivered State = "delivered" // a receiver accepted it
	StateFailed    State = "failed"    // it kept failing for the give-up period; not retried
)

// Filter narrows List. Zero fields match everything.
type Filter struct {
	Key   string
	Kind  string
	State State
	Limit int // default 100, at most 1000
}

// Status is what a listing tells of a message: never its body or headers, and of a webhook
// URL neither credentials nor query, as those may carry secrets.
type Status struct {
	Key           string
	Kind          string
	Channel       string
	Target        string
	State         State
	Attempts      int
	CreatedAt     time.Time
	NextAttemptAt *time.Time // while pending
	DeliveredAt   *time.Time
	FailedAt      *time.Time
	LastError     string // the latest failed attempt's, while not delivered
}

// List returns the messages that match f, newest first.
func List(ctx context.Context, db DBTX, f Filter) ([]Status, error) {
	switch f.State {
	case "", StatePending, StateDelivered, StateFailed:
	default:
		return nil, fmt.Errorf("listing deliveries: unknown state %q", f.State)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	rows, err := db.Query(ctx, `SELECT key, kind, channel, target, attempts, created_at,
			next_attempt_at, delivered_at, failed_at, coalesce(last_error, '')
		FROM delivery_message
		WHERE ($1 = '' OR key = $1) AND ($2 = '' OR kind = $2)
			AND CASE $3
				WHEN 'pending' THEN next_attempt_at IS NOT NULL
				WHEN 'delivered' THEN delivered_at IS NOT NULL
				WHEN 'failed' THEN failed_at IS NOT NULL
				ELSE true END
		ORDER BY id DESC
		LIMIT $4`, f.Key, f.Kind, string(f.State), limit)
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Status, error) {
		var s Status
		err := row.Scan(&s.Key, &s.Kind, &s.Channel, &s.Target, &s.Attempts, &s.CreatedAt,
			&s.NextAttemptAt, &s.DeliveredAt, &s.FailedAt, &s.LastError)
		s.Target = redactTarget(s.Channel, s.Target)
		switch {
		case s.DeliveredAt != nil:
			s.State = StateDelivered
		case s.FailedAt != nil:
			s.State = StateFailed
		default:
			s.State = StatePending
		}
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", err)
	}
	return list, nil
}

// Attempt is one recorded attempt to send a message.
type Attempt struct {
	Attempt  int // 1 for the first
	At       time.Time
	OK       bool
	Status   int    // HTTP status or SMTP reply code; 0 when there was none
	Error    string // "" when OK
	Duration time.Duration
}

// ListAttempts returns the attempts to send the message with key, in order; none for an
// unknown key.
func ListAttempts(ctx context.Context, db DBTX, key string) ([]Attempt, error) {
	rows, err := db.Query(ctx, `SELECT a.attempt, a.attempted_at, a.ok, coalesce(a.status, 0),
			coalesce(a.error, ''), a.duration_ms
		FROM delivery_attempt a JOIN delivery_message m ON m.id = a.message_id
		WHERE m.key = $1
		ORDER BY a.attempt`, key)
	if err != nil {
		return nil, fmt.Errorf("listing attempts of delivery %q: %w", key, err)
	}
	attempts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		var ms int64
		err := row.Scan(&a.Attempt, &a.At, &a.OK, &a.Status, &a.Error, &ms)
		a.Duration = time.Duration(ms) * time.Millisecond
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing attempts of delivery %q: %w", key, err)
	}
	return attempts, nil
}

// PruneDelivered deletes the messages delivered before before, with their attempts, and says
// how many. Their bodies carry patient data that need not be kept once delivered. Pending and
// failed messages are kept.
func PruneDelivered(ctx context.Context, db DBTX, before time.Time) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM delivery_message WHERE delivered_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("pruning delivered messages: %w", err)
	}
	return tag.RowsAffected(), nil
}
