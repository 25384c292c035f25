package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

const userAgent = "cartreg-delivery/1"

// sendWebhook POSTs the body; a 2xx answer is a delivery, anything else a failure.
func (d *Deliverer) sendWebhook(ctx context.Context, m *message) sendResult {
	client := d.cfg.HTTPClient
	if m.Kind == KindSubscription {
		if !d.cfg.SubscriptionEndpoints.Allows(m.Target) {
			return sendResult{final: true, err: errors.New("the endpoint is not in the Subscription endpoint allow-list (-subscription-endpoints)")}
		}
		client = d.guarded
	}
	if client.Timeout <= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultSendTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.Target, bytes.NewReader(m.Body))
	if err != nil {
		return sendResult{err: fmt.Errorf("building the request: %w", urlErrorCause(err))}
	}
	for name, value := range m.Headers {
		req.Header.Set(name, value)
	}
	if m.ContentType != "" {
		req.Header.Set("Content-Type", m.ContentType)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderDelivery, m.Key)

	resp, err := client.Do(req)
	if err != nil {
		return sendResult{err: fmt.Errorf("POST: %w", urlErrorCause(err))}
	}
	defer resp.Body.Close()
	// Drained so the connection can be reused; not kept, as a receiver may echo what it got.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return sendResult{status: resp.StatusCode}
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return sendResult{status: resp.StatusCode, err: fmt.Errorf("HTTP %s (redirects are not followed)", resp.Status)}
	}
	return sendResult{status: resp.StatusCode, err: fmt.Errorf("HTTP %s", resp.Status)}
}

// urlErrorCause strips the URL that net/http puts in its errors: a webhook URL may carry a
// secret in its query, and the errors are logged and stored.
func urlErrorCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// targetHost is what logs say of a target: a URL's host, or the domains of e-mail addresses.
func targetHost(channel, target string) string {
	switch channel {
	case ChannelWebhook:
		if u, err := url.Parse(target); err == nil {
			return u.Host
		}
	case ChannelEmail:
		var domains []string
		for _, a := range strings.Split(target, ",") {
			if _, domain, ok := strings.Cut(a, "@"); ok {
				domains = append(domains, strings.Trim(domain, " >"))
			}
		}
		return strings.Join(domains, ",")
	}
	return ""
}

// redactTarget is what listings show of a target: a URL without credentials or query (either
// may be a secret), or the addresses as given.
func redactTarget(channel, target string) string {
	if channel != ChannelWebhook {
		return target
	}
	u, err := url.Parse(target)
	if err != nil {
		return ""
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}
