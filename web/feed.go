package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

// PathFeed is the work list's calendar feed, the API route a feed token opens.
const PathFeed = "/worklist.ics"

// FeedParam is the query parameter that carries a feed token.
const FeedParam = "feed"

// NewFeedToken makes a new calendar feed token for the user, replacing (and so revoking) any
// they had, and returns it; only its SHA-256 is kept.
func (us *Users) NewFeedToken(ctx context.Context, name string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	raw := base64.RawURLEncoding.EncodeToString(b)
	_, err := us.db.Exec(ctx, `INSERT INTO web_feed_token (user_name, token_hash, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (user_name) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at, last_used_at = NULL`,
		name, hashID(raw), us.now())
	if err != nil {
		return "", fmt.Errorf("making a feed token for %s: %w", name, err)
	}
	return raw, nil
}

// RevokeFeedToken ends the user's feed token, if they have one.
func (us *Users) RevokeFeedToken(ctx context.Context, name string) error {
	if _, err := us.db.Exec(ctx, `DELETE FROM web_feed_token WHERE user_name = $1`, name); err != nil {
		return fmt.Errorf("revoking %s's feed token: %w", name, err)
	}
	return nil
}

// hasFeedToken says whether the user has a feed token.
func (us *Users) hasFeedToken(ctx context.Context, name string) (bool, error) {
	var n int
	if err := us.db.QueryRow(ctx, `SELECT count(*) FROM web_feed_token WHERE user_name = $1`, name).Scan(&n); err != nil {
		return false, fmt.Errorf("reading %s's feed token: %w", name, err)
	}
	return n > 0, nil
}

// feedUser is the enabled user whose feed token raw is; nil when it is nobody's.
func (us *Users) feedUser(ctx context.Context, raw string) (*User, error) {
	if raw == "" || len(raw) > 100 {
		return nil, nil
	}
	var u User
	var role string
	err := us.db.QueryRow(ctx, `UPDATE web_feed_token f SET last_used_at = $2 FROM web_user u
		WHERE f.token_hash = $1 AND u.name = f.user_name AND u.disabled_at IS NULL
		RETURNING u.name, u.display_name, u.role, u.sites`, hashID(raw), us.now()).
		Scan(&u.Name, &u.DisplayName, &role, &u.Sites)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading a feed token: %w", err)
	}
	u.Role = auth.Role(role)
	return &u, nil
}

type feedKey struct{}

// isFeed says whether c is the calendar feed opened by a feed token: the request carries its
// own principal, which the bearer token middleware leaves alone.
func isFeed(c echo.Context) bool {
	ok, _ := c.Request().Context().Value(feedKey{}).(bool)
	return ok
}

// feed authenticates a request for the calendar feed by its feed token: the token's user
// becomes the principal, for this one route only, so the access policy and the work list's
// own site limit apply as to their sessions, and the request is audited as theirs. A token
// that is nobody's (made up, replaced, or of a disabled user) is a 401.
func (p *Pages) feed(c echo.Context, next echo.HandlerFunc) error {
	ctx := c.Request().Context()
	u, err := p.users.feedUser(ctx, c.QueryParam(FeedParam))
	if err != nil {
		return err
	}
	if u == nil {
		return fhir.NewOutcome(http.StatusUnauthorized, fhir.IssueType("login"),
			"this calendar feed link is not (or no longer) valid: copy the current one from the work list page", FeedParam)
	}
	// The work list reads the query too (echo's cached copy of it): the token is no filter.
	q := c.QueryParams()
	q.Del(FeedParam)
	r := c.Request().WithContext(context.WithValue(auth.WithPrincipal(ctx, u.Principal()), feedKey{}, true))
	r.URL.RawQuery = q.Encode()
	c.SetRequest(r)
	return next(c)
}

// FeedURL is the subscribe link for a feed token on the server at root, absolute, as calendar
// applications want it.
func FeedURL(root, raw string) string {
	return strings.TrimRight(root, "/") + PathFeed + "?" + url.Values{FeedParam: {raw}}.Encode()
}

// RedactFeedToken is a query string without its feed token, for the audit trail: a record
// of who read the feed must not be a way in to it.
func RedactFeedToken(rawQuery string) string {
	if !strings.Contains(rawQuery, FeedParam+"=") {
		return rawQuery
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return ""
	}
	if q.Has(FeedParam) {
		q.Set(FeedParam, "REDACTED")
	}
	return q.Encode()
}

// newFeed makes the signed-in person a new calendar feed link and shows it, once: only its
// hash is kept, so the page cannot show it again, and a new one revokes the old.
func (p *Pages) newFeed(c echo.Context) error {
	s := sessionOf(c)
	raw, err := p.users.NewFeedToken(c.Request().Context(), s.user.Name)
	if err != nil {
		return err
	}
	return p.page(c, http.StatusOK, "feed", pageData{Title: "Calendar feed", Nav: "work", Data: FeedURL(p.d.RootURL, raw)})
}

// revokeFeed ends the signed-in person's calendar feed link.
func (p *Pages) revokeFeed(c echo.Context) error {
	if err := p.users.RevokeFeedToken(c.Request().Context(), sessionOf(c).user.Name); err != nil {
		return err
	}
	return p.back(c, "Calendar link revoked: calendars subscribed to it get nothing more.")
}
