package outbox

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The channels a message can go by.
const (
	ChannelWebhook = "webhook"
	ChannelEmail   = "email"
)

// HeaderDelivery is the webhook request header that carries a message's Key, so a receiver can
// drop repeats: delivery is at least once.
const HeaderDelivery = "X-Cartreg-Delivery"

// DBTX is what the queries run on: the pool, or the caller's transaction. fhir.DBTX has the
// same shape.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Message is one notification to deliver.
type Message struct {
	// Key is the idempotency key, unique: enqueueing a Key already present does nothing.
	Key string
	// Kind says what it is, for logs and listings: "digest", "subscription", …
	Kind string
	// Channel is ChannelWebhook or ChannelEmail.
	Channel string
	// Target is the http(s) URL, or the e-mail address(es), comma-separated.
	Target string
	// Headers are extra HTTP headers for a webhook (a FHIR Subscription's channel.header). They
	// are stored, since they are sent on every attempt, but never logged nor listed.
	// Content-Type, User-Agent and X-Cartreg-Delivery are set by the Deliverer and win.
	Headers map[string]string
	// ContentType is the body's media type, e.g. "application/fhir+json".
	ContentType string
	// Subject is the e-mail subject.
	Subject string
	// Body is the webhook request body. By e-mail, a text/plain Body (or one with no
	// ContentType) is the mail's text; any other is attached as a file named after Kind
	// ("digest.json") below a short text naming it.
	Body []byte
}

// ErrInvalidMessage is returned, wrapped, by Enqueue for a message that could never be sent.
var ErrInvalidMessage = errors.New("invalid delivery message")

// Enqueue stores msgs in the caller's transaction, so a message exists exactly when the write
// that caused it commits, stamped with the wall clock; EnqueueAt takes the time from the
// caller's clock. Messages whose Key is already queued are skipped. A message that could never
// be sent (no key, an unknown channel, a target that is not an http(s) URL or a list of e-mail
// addresses, a malformed or hop-by-hop header) fails the whole call with ErrInvalidMessage and stores nothing.
func Enqueue(ctx context.Context, tx DBTX, msgs ...Message) error {
	return EnqueueAt(ctx, tx, time.Now(), msgs...)
}

// EnqueueAt is Enqueue with the enqueue time given: the messages are due at once, and their
// give-up period runs from then.
func EnqueueAt(ctx context.Context, tx DBTX, at time.Time, msgs ...Message) error {
	if at.IsZero() {
		return fmt.Errorf("%w: no enqueue time", ErrInvalidMessage)
	}
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, m := range msgs {
		headers := m.Headers
		if headers == nil {
			headers = map[string]string{}
		}
		body := m.Body
		if body == nil {
			body = []byte{}
		}
		b.Queue(`INSERT INTO delivery_message
			(key, kind, channel, target, headers, content_type, subject, body, created_at, next_attempt_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
			ON CONFLICT (key) DO NOTHING`,
			m.Key, m.Kind, m.Channel, m.Target, headers, m.ContentType, m.Subject, body, at)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("enqueueing %d delivery messages: %w", len(msgs), err)
	}
	return nil
}

// Validate reports why m could never be sent, wrapping ErrInvalidMessage; nil if it could.
func (m Message) Validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidMessage, m.Key, fmt.Sprintf(format, args...))
	}
	if m.Key == "" {
		return fmt.Errorf("%w: no key", ErrInvalidMessage)
	}
	if m.Kind == "" {
		return invalid("no kind")
	}
	if m.ContentType != "" {
		if _, _, err := mime.ParseMediaType(m.ContentType); err != nil {
			return invalid("content type %q: %v", m.ContentType, err)
		}
	}
	switch m.Channel {
	case ChannelWebhook:
		u, err := url.Parse(m.Target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("webhook target is not an http(s) URL")
		}
		for name, value := range m.Headers {
			if err := checkHeader(name, value); err != nil {
				return invalid("%v", err)
			}
		}
	case ChannelEmail:
		if _, err := mail.ParseAddressList(m.Target); err != nil {
			return invalid("e-mail target: %v", err)
		}
	default:
		return invalid("unknown channel %q", m.Channel)
	}
	return nil
}

// validHeaderName reports whether name is an HTTP token (RFC 9110, section 5.6.2).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
