// Package subscription implements FHIR R4 Subscriptions with the rest-hook channel: a client
// creates a Subscription whose criteria is a search ("Task?owner=Practitioner/7&status=requested")
// and is POSTed to each time a resource matching it is created or changed.
//
// Everything happens in the write's own transaction, as a store write hook: a Subscription
// resource is checked (422 if it cannot be honoured) and turned active; every other write is
// matched against the active Subscriptions of its type with the server's own search, and a
// notification is queued in the durable delivery outbox, which sends it, retrying with
// back-off, after the write commits. A notification exists exactly when its write committed.
package subscription

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/outbox"
)

// Hook matches writes against Subscriptions; install it with fhir.Store.AddHook after the
// hooks whose writes should be notified too (they are seen in a later round either way).
type Hook struct {
	store    *fhir.Store
	searcher *fhir.Searcher
	now      func() time.Time
}

// New returns the Subscription hook; searcher runs the criteria, now is the clock.
func New(store *fhir.Store, searcher *fhir.Searcher, now func() time.Time) *Hook {
	return &Hook{store: store, searcher: searcher, now: now}
}

// channel is what a Subscription asks for, checked.
type channel struct {
	resourceType, criteria, endpoint, payload string
	headers                                   map[string]string
	end                                       *time.Time
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
	type active struct {
		id string
		channel
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
	var msgs []outbox.Message
	for _, sub := range subs {
		written := byType[sub.resourceType]
		ids := make([]string, len(written))
		for i, c := range written {
			ids[i] = c.ID
		}
		matches, err := h.searcher.Matching(ctx, tx, sub.criteria, ids)
		if err != nil {
			return fmt.Errorf("subscription %s: %w", sub.id, err)
		}
		for _, v := range matches {
			m := outbox.Message{
				Key:     fmt.Sprintf("subscription/%s/%s/%s/%d", sub.id, v.Type, v.ID, v.VersionID),
				Kind:    "subscription",
				Channel: outbox.ChannelWebhook, Target: sub.endpoint, Headers: sub.headers,
			}
			if sub.payload != "" {
				m.ContentType, m.Body = sub.payload, v.JSON
			}
			msgs = append(msgs, m)
		}
	}
	return outbox.EnqueueAt(ctx, tx, h.now(), msgs...)
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
	ch.endpoint, _ = raw["endpoint"].(string)
	if u, err := url.Parse(ch.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail("Subscription.channel.endpoint", "a rest-hook needs an absolute http(s) endpoint, got %q", ch.endpoint)
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
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fail("Subscription.channel.header["+strconv.Itoa(i)+"]", "header %q: want \"Name: value\"", line)
		}
		ch.headers[strings.TrimSpace(name)] = strings.TrimSpace(value)
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
