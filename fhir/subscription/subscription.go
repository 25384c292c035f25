// Package subscription implements FHIR R4 Subscriptions with the rest-hook channel: a client
// creates a Subscription whose criteria is a search ("Task?owner=Practitioner/7&status=requested")
// and is POSTed to each time a resource matching it is created or changed.
//
// Everything happens in the write's own transaction, as a store write hook: a Subscription
// resource is checked (422 if it cannot be honoured) and turned active; every other write is
// matched against the active Subscriptions of its type with the server's own search, and a
// notification is queued in the durable delivery outbox, which sends it, retrying with
// back-off, after the write commits. A notification exists exactly when its write committed.
//
// Endpoints are chosen by API clients, so rest-hooks go only where the administrator's
// allow-list (Config.Endpoints) says; the outbox checks it again when it sends, and connects
// only to public addresses or those the list names. A Subscription that cannot be honoured
// when a write matches it is put in error rather than fail the write (see Hook).
package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/outbox"
)

// Config is how Subscriptions are honoured.
type Config struct {
	// Endpoints is where rest-hooks may point, as the administrator allows
	// (-subscription-endpoints). Nil or empty: rest-hook Subscriptions are refused.
	Endpoints *outbox.AllowList
	// Logger hears of Subscriptions put in error; nil discards.
	Logger *slog.Logger
}

// Hook matches writes against Subscriptions; install it with fhir.Store.AddHook after the
// hooks whose writes should be notified too (they are seen in a later round either way).
//
// A Subscription that cannot be honoured at write time (its endpoint no longer allowed, a
// header or criteria that no longer check, a criteria whose search fails) never fails the
// write: the write commits without its notification, and the Subscription is set to status
// error with the reason in Subscription.error, in the same transaction.
type Hook struct {
	store    *fhir.Store
	searcher *fhir.Searcher
	cfg      Config
	logger   *slog.Logger
	now      func() time.Time
}

// New returns the Subscription hook; searcher runs the criteria, now is the clock.
func New(store *fhir.Store, searcher *fhir.Searcher, cfg Config, now func() time.Time) *Hook {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Hook{store: store, searcher: searcher, cfg: cfg, logger: logger, now: now}
}

// channel is what a Subscription asks for, checked.
type channel struct {
	resourceType, criteria, endpoint, payload string
	headers                                   map[string]string
	end                                       *time.Time
}

// active is a row of subscription_active.
type active struct {
	id string
	channel
}

// BeforeCommit implements fhir.WriteHook.
func (h *Hook) BeforeCommit(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	byType := map[string][]fhir.Change{}
	for _, c := range changes {
		if c.Type == "Subscription" {
			if err := h.subscriptionWritten(ctx, tx, c); err != nil {
				return err
			}
			continue
		}
		if c.Body != nil {
			byType[c.Type] = append(byType[c.Type], c)
		}
	}
	if len(byType) == 0 {
		return nil
	}
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	rows, err := tx.Query(ctx, `SELECT subscription_id, resource_type, criteria, endpoint, payload, headers
		FROM subscription_active WHERE resource_type = ANY($1) AND (ends_at IS NULL OR ends_at > $2)
		ORDER BY subscription_id`, types, h.now())
	if err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	var subs []active
	for rows.Next() {
		var a active
		if err := rows.Scan(&a.id, &a.resourceType, &a.criteria, &a.endpoint, &a.payload, &a.headers); err != nil {
			rows.Close()
			return err
		}
		subs = append(subs, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	if len(subs) == 0 {
		return nil
	}

	broken := map[string]string{} // subscription id → why it cannot be honoured
	var usable []active
	for _, sub := range subs {
		if reason := h.recheck(sub); reason != "" {
			broken[sub.id] = reason
			continue
		}
		usable = append(usable, sub)
	}
	matches, err := h.match(ctx, tx, usable, byType, broken)
	if err != nil {
		return err
	}
	var msgs []outbox.Message
	for _, sub := range usable {
		if broken[sub.id] != "" {
			continue
		}
		for _, v := range matches[sub.id] {
			m := sub.message(fmt.Sprintf("subscription/%s/%s/%s/%d", sub.id, v.Type, v.ID, v.VersionID))
			if sub.payload != "" {
				m.ContentType, m.Body = sub.payload, v.JSON
			}
			msgs = append(msgs, m)
		}
	}
	for _, sub := range subs {
		if reason := broken[sub.id]; reason != "" {
			if err := h.disable(ctx, tx, sub.id, reason); err != nil {
				return err
			}
		}
	}
	return outbox.EnqueueAt(ctx, tx, h.now(), msgs...)
}

func (a active) message(key string) outbox.Message {
	return outbox.Message{Key: key, Kind: outbox.KindSubscription, Channel: outbox.ChannelWebhook,
		Target: a.endpoint, Headers: a.headers, ContentType: a.payload}
}

// recheck is why a stored Subscription can no longer be honoured, or "": the allow-list may
// have changed since it was accepted, and rows accepted before headers were checked as they
// are now may hold what the outbox refuses.
func (h *Hook) recheck(sub active) string {
	if !h.cfg.Endpoints.Allows(sub.endpoint) {
		return "the endpoint is no longer among those the administrator allows (-subscription-endpoints)"
	}
	m := sub.message("subscription/" + sub.id)
	if err := m.Validate(); err != nil {
		return "the channel cannot be used: " + strings.TrimPrefix(err.Error(), outbox.ErrInvalidMessage.Error()+" ")
	}
	if _, err := h.searcher.CheckCriteria(sub.criteria); err != nil {
		return fmt.Sprintf("the criteria can no longer be matched: %v", err)
	}
	return ""
}

// match runs each Subscription's criteria on the written resources of its type. A criteria
// that fails puts its Subscription in broken instead of failing the write: all run inside one
// savepoint, and when a search fails in the database each is run again in a savepoint of its
// own, to tell which failed and keep the others. Only errors about ctx or the connection are
// returned.
func (h *Hook) match(ctx context.Context, tx pgx.Tx, subs []active, byType map[string][]fhir.Change, broken map[string]string) (map[string][]*fhir.Version, error) {
	run := func(db pgx.Tx, sub active) ([]*fhir.Version, error) {
		written := byType[sub.resourceType]
		ids := make([]string, len(written))
		for i, c := range written {
			ids[i] = c.ID
		}
		return h.searcher.Matching(ctx, db, sub.criteria, ids)
	}
	out := map[string][]*fhir.Version{}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	failedInDB := false
	for _, sub := range subs {
		found, err := run(sp, sub)
		var outcome *fhir.Outcome
		switch {
		case err == nil:
			out[sub.id] = found
		case errors.As(err, &outcome):
			broken[sub.id] = "the criteria can no longer be matched: " + outcome.Error()
		default:
			failedInDB = true
		}
		if failedInDB {
			break
		}
	}
	if !failedInDB {
		if err := sp.Commit(ctx); err != nil {
			return nil, fmt.Errorf("subscriptions: %w", err)
		}
		return out, nil
	}
	if err := sp.Rollback(ctx); err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	out = map[string][]*fhir.Version{}
	for _, sub := range subs {
		if broken[sub.id] != "" {
			continue
		}
		one, err := tx.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("subscriptions: %w", err)
		}
		found, err := run(one, sub)
		if err != nil {
			if rbErr := one.Rollback(ctx); rbErr != nil {
				return nil, fmt.Errorf("subscriptions: %w", rbErr)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			h.logger.Warn("a Subscription's criteria failed", "subscription", sub.id, "error", err)
			broken[sub.id] = "matching the criteria failed on the server"
			continue
		}
		if err := one.Commit(ctx); err != nil {
			return nil, fmt.Errorf("subscriptions: %w", err)
		}
		out[sub.id] = found
	}
	return out, nil
}

// disable puts a Subscription in error with reason, in tx, and stops matching it. Of several
// writes that find it broken at once, the first does it: the others find its row gone.
func (h *Hook) disable(ctx context.Context, tx pgx.Tx, id, reason string) error {
	tag, err := tx.Exec(ctx, `DELETE FROM subscription_active WHERE subscription_id = $1`, id)
	if err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	cur, err := h.store.Read(ctx, tx, "Subscription", id)
	var outcome *fhir.Outcome
	if errors.As(err, &outcome) {
		return nil // deleted meanwhile: nothing left to mark
	}
	if err != nil {
		return err
	}
	var body map[string]any
	if err := json.Unmarshal(cur.JSON, &body); err != nil {
		return fmt.Errorf("reading Subscription/%s: %w", id, err)
	}
	delete(body, "meta")
	body["status"] = "error"
	body["error"] = reason
	if _, err := h.store.PutBatch(ctx, tx, []*fhir.Resource{{Type: "Subscription", ID: id, Body: body}}); err != nil {
		return fmt.Errorf("putting Subscription/%s in error: %w", id, err)
	}
	h.logger.Warn("Subscription put in error", "subscription", id, "reason", reason)
	return nil
}

// subscriptionWritten keeps subscription_active in step with a Subscription resource, and
// turns a requested one active (a second version, which this hook sees again and keeps).
func (h *Hook) subscriptionWritten(ctx context.Context, tx pgx.Tx, c fhir.Change) error {
	if _, err := tx.Exec(ctx, `DELETE FROM subscription_active WHERE subscription_id = $1`, c.ID); err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	if c.Body == nil {
		return nil
	}
	status, _ := c.Body["status"].(string)
	if status == "off" || status == "error" {
		return nil
	}
	ch, err := h.check(c)
	if err != nil {
		return err
	}
	if status == "requested" {
		body := make(map[string]any, len(c.Body))
		for k, v := range c.Body {
			body[k] = v
		}
		delete(body, "meta")
		body["status"] = "active"
		if _, err := h.store.PutBatch(ctx, tx, []*fhir.Resource{{Type: "Subscription", ID: c.ID, Body: body}}); err != nil {
			return fmt.Errorf("activating Subscription/%s: %w", c.ID, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO subscription_active (subscription_id, resource_type, criteria, endpoint, payload,
		headers, ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`, c.ID, ch.resourceType, ch.criteria, ch.endpoint, ch.payload,
		ch.headers, ch.end); err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	return nil
}

// check reads a Subscription's channel and criteria; what cannot be honoured is a 422 that
// says where.
func (h *Hook) check(c fhir.Change) (channel, error) {
	ref := "Subscription/" + c.ID
	fail := func(where, format string, args ...any) (channel, error) {
		return channel{}, &fhir.Outcome{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{
			Severity: fhir.Error, Code: fhir.NotSupported, Diagnostics: fmt.Sprintf(format, args...),
			Expression: []string{where}, Resource: ref}}}
	}
	var ch channel
	ch.criteria, _ = c.Body["criteria"].(string)
	rt, err := h.searcher.CheckCriteria(ch.criteria)
	if err != nil {
		return fail("Subscription.criteria", "criteria %q cannot be matched: %v", ch.criteria, err)
	}
	ch.resourceType = rt
	if rt == "Subscription" {
		return fail("Subscription.criteria", "a Subscription on Subscriptions is not supported")
	}
	raw, _ := c.Body["channel"].(map[string]any)
	if typ, _ := raw["type"].(string); typ != "rest-hook" {
		return fail("Subscription.channel.type", "channel type %q is not supported: only rest-hook is", typ)
	}
	if h.cfg.Endpoints.Empty() {
		return fail("Subscription.channel.type", "rest-hook Subscriptions are off on this server: an administrator turns them on "+
			"by listing the endpoints they may notify in -subscription-endpoints (CARTREG_SUBSCRIPTION_ENDPOINTS)")
	}
	ch.endpoint, _ = raw["endpoint"].(string)
	if u, err := url.Parse(ch.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail("Subscription.channel.endpoint", "a rest-hook needs an absolute http(s) endpoint, got %q", ch.endpoint)
	}
	if !h.cfg.Endpoints.Allows(ch.endpoint) {
		return fail("Subscription.channel.endpoint", "endpoint %q is not among those this server's administrator allows "+
			"(-subscription-endpoints)", ch.endpoint)
	}
	ch.payload, _ = raw["payload"].(string)
	switch strings.TrimSpace(strings.Split(ch.payload, ";")[0]) {
	case "", "application/fhir+json", "application/json":
	default:
		return fail("Subscription.channel.payload", "payload %q is not supported: application/fhir+json, or none", ch.payload)
	}
	ch.headers = map[string]string{}
	headers, _ := raw["header"].([]any)
	for i, hv := range headers {
		line, _ := hv.(string)
		name, value, err := outbox.ParseHeaderLine(line)
		if err != nil {
			// The line is not repeated: it may hold a credential.
			return fail("Subscription.channel.header["+strconv.Itoa(i)+"]", "header line %d: %v", i+1, err)
		}
		ch.headers[name] = value
	}
	if end, ok := c.Body["end"].(string); ok {
		t, err := time.Parse(time.RFC3339, end)
		if err != nil {
			return fail("Subscription.end", "end %q: want an instant", end)
		}
		ch.end = &t
	}
	return ch, nil
}
