package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Config is how the pages sign people in.
type Config struct {
	// SessionIdleTimeout ends a session unused for this long.
	SessionIdleTimeout time.Duration
	// SessionLifetime ends a session this long after sign-in, however busy.
	SessionLifetime time.Duration
	// SignInAttempts is how many failed sign-ins one name, or one address, may make in
	// SignInWindow before the next is refused until the window has passed.
	SignInAttempts int
	SignInWindow   time.Duration
	// WorkListPageSize is how many visits one page of the work list shows; the rest are on
	// the next pages. A page of every open visit of a large network is megabytes of HTML.
	WorkListPageSize int
	// WorkListSearchMax is how many patients one word of a work-list search by name or MRN
	// may begin the names or identifiers of before the search asks for more of it: "s", or
	// the prefix every MRN shares, would otherwise read the whole registry's index.
	WorkListSearchMax int
	// OIDC offers people the hospital's OpenID Connect provider on the sign-in page.
	OIDC OIDCSignIn
}

// The defaults: a coordinator's tablet left on a ward signs out within half an hour.
const (
	DefaultSessionIdleTimeout = 30 * time.Minute
	DefaultSessionLifetime    = 12 * time.Hour
	DefaultSignInAttempts     = 5
	DefaultSignInWindow       = 15 * time.Minute
	DefaultWorkListPageSize   = 100
	DefaultWorkListSearchMax  = 5000
)

func (c *Config) defaults() {
	if c.SessionIdleTimeout <= 0 {
		c.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	if c.SessionLifetime <= 0 {
		c.SessionLifetime = DefaultSessionLifetime
	}
	if c.SignInAttempts <= 0 {
		c.SignInAttempts = DefaultSignInAttempts
	}
	if c.SignInWindow <= 0 {
		c.SignInWindow = DefaultSignInWindow
	}
	if c.WorkListPageSize <= 0 {
		c.WorkListPageSize = DefaultWorkListPageSize
	}
	if c.WorkListSearchMax <= 0 {
		c.WorkListSearchMax = DefaultWorkListSearchMax
	}
	if c.OIDC.Timeout <= 0 {
		c.OIDC.Timeout = DefaultOIDCSignInTimeout
	}
	if c.OIDC.Name == "" {
		if u, err := url.Parse(c.OIDC.Issuer); err == nil && u.Host != "" {
			c.OIDC.Name = u.Hostname()
		} else {
			c.OIDC.Name = "your organisation's sign-in"
		}
	}
}

// Deps are the parts of cartreg the pages work through: the same store, hooks, work list,
// registry and audit trail as the API.
type Deps struct {
	DB       *pgxpool.Pool
	Store    *fhir.Store
	FollowUp *followup.Tracker
	Registry *registry.Registry
	Audit    *audit.Recorder
	// InSites says whether a resource concerns a patient of one of the sites: the access
	// policy's own check, so a coordinator's page reaches no further than their API calls.
	InSites func(ctx context.Context, resourceType, id string, sites []string) (bool, error)
	Clock   func() time.Time
	Logger  *slog.Logger
	// Identity verifies the ID tokens of the OpenID Connect sign-in, and finds the provider's
	// endpoints; nil offers no such sign-in.
	Identity *auth.Service
	// HTTPClient reaches the provider's token endpoint; nil is a client with a 15 s timeout.
	HTTPClient *http.Client
	// RootURL is the server's root as people reach it (the token issuer): links to take
	// elsewhere, such as the calendar feed's, are built on it, never on a request's Host.
	RootURL string
}

// Pages are cartreg's web pages.
type Pages struct {
	cfg      Config
	d        Deps
	users    *Users
	worklist *followup.Worklist
	tmpl     *template.Template
	limiter  *limiter
	e        *echo.Echo
	paths    map[string]bool // the route templates Pages registered
}

// New returns the pages over d.
func New(cfg Config, d Deps) (*Pages, error) {
	cfg.defaults()
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parsing the page templates: %w", err)
	}
	return &Pages{cfg: cfg, d: d, users: NewUsers(d.DB, d.Clock), tmpl: tmpl,
		worklist: d.FollowUp.Worklist(d.Store.DB(), d.Clock),
		limiter:  &limiter{db: d.DB, max: cfg.SignInAttempts, window: cfg.SignInWindow},
		paths:    map[string]bool{}}, nil
}

// Users is where the pages' people are kept.
func (p *Pages) Users() *Users { return p.users }

// The paths of the pages.
const (
	PathSignIn  = "/signin"
	PathSignOut = "/signout"
	PathWork    = "/work"
	PathStatic  = "/static/*"
)

// Register mounts the pages on e.
func (p *Pages) Register(e *echo.Echo) {
	p.e = e
	add := func(method, path string, h echo.HandlerFunc) {
		p.paths[path] = true
		e.Add(method, path, h)
	}
	add(http.MethodGet, "/", p.home)
	add(http.MethodGet, PathSignIn, p.signInForm)
	add(http.MethodPost, PathSignIn, p.signIn)
	add(http.MethodPost, PathSignOut, p.signOut)
	add(http.MethodGet, PathOIDCSignIn, p.oidcStart)
	add(http.MethodGet, PathOIDCCallback, p.oidcCallback)
	add(http.MethodGet, PathWork, p.work)
	add(http.MethodGet, PathWork+".csv", p.workCSV)
	add(http.MethodPost, "/work/tasks/:id/missed", p.markMissed)
	add(http.MethodPost, "/work/tasks/:id/note", p.addNote)
	add(http.MethodPost, "/work/tasks/:id/visited", p.recordVisit)
	add(http.MethodPost, "/work/tasks/:id/reschedule", p.reschedule)
	add(http.MethodPost, "/work/tasks/:id/reassign", p.reassign)
	add(http.MethodPost, "/work/patients/:id/lost", p.markLost)
	add(http.MethodPost, "/work/feed", p.newFeed)
	add(http.MethodPost, "/work/feed/revoke", p.revokeFeed)
	add(http.MethodGet, "/patients/:id", p.timeline)
	add(http.MethodGet, "/outcomes", p.outcomes)
	add(http.MethodGet, "/outcomes/response.csv", p.outcomesExport)
	add(http.MethodGet, "/outcomes/survival.csv", p.outcomesExport)
	add(http.MethodGet, "/outcomes/response.svg", p.outcomesExport)
	add(http.MethodGet, "/outcomes/survival.svg", p.outcomesExport)
	add(http.MethodGet, "/status", p.status)
	static, _ := fs.Sub(staticFiles, "static")
	add(http.MethodGet, PathStatic, echo.WrapHandler(http.StripPrefix("/static/", http.FileServer(http.FS(static)))))
}

// public are the pages anyone may open: signing in needs no session.
var public = map[string]bool{"GET " + PathSignIn: true, "POST " + PathSignIn: true, "GET " + PathStatic: true,
	"GET " + PathOIDCSignIn: true, "GET " + PathOIDCCallback: true}

// IsPage says whether c's route is one of the pages.
func (p *Pages) IsPage(c echo.Context) bool { return p.paths[c.Path()] }

// SignedIn says whether c is a page request whose session put a principal on it, or the
// calendar feed opened by a feed token: the bearer token middleware leaves such requests
// alone, and the access policy judges the principal.
func (p *Pages) SignedIn(c echo.Context) bool {
	if isFeed(c) {
		return true
	}
	if !p.IsPage(c) {
		return false
	}
	_, ok := auth.FromContext(c.Request().Context())
	return ok || public[c.Request().Method+" "+c.Path()]
}

// contentSecurityPolicy lets the pages load their own scripts, styles and images and nothing
// else, post forms only to themselves, and never be framed.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

const sessionCookie = "cartreg_session"

// Sessions is the middleware of the pages: it reads the session cookie and puts its user's
// principal on the request, sends a signed-out browser to the sign-in page, and refuses a
// form posted without the session's CSRF token. Requests for other routes pass untouched.
func (p *Pages) Sessions() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !p.IsPage(c) {
				if c.Path() == PathFeed && c.QueryParams().Has(FeedParam) && c.Request().Header.Get(echo.HeaderAuthorization) == "" {
					return p.feed(c, next)
				}
				return next(c)
			}
			c.Response().Header().Set("Content-Security-Policy", contentSecurityPolicy)
			if public[c.Request().Method+" "+c.Path()] {
				return next(c)
			}
			var raw string
			if ck, err := c.Cookie(sessionCookie); err == nil {
				raw = ck.Value
			}
			s, err := p.users.session(c.Request().Context(), raw, p.cfg.SessionIdleTimeout)
			if err != nil {
				return err
			}
			if s == nil {
				if c.Request().Method != http.MethodGet {
					return p.page(c, http.StatusUnauthorized, "error", pageData{Title: "Signed out",
						Message: "Your session has ended. Sign in again, then repeat what you were doing."})
				}
				return c.Redirect(http.StatusSeeOther, PathSignIn+"?next="+url.QueryEscape(c.Request().URL.RequestURI()))
			}
			if c.Request().Method == http.MethodPost && !hmac.Equal([]byte(c.FormValue("csrf")), []byte(csrfToken(s.raw))) {
				return p.page(c, http.StatusForbidden, "error", pageData{Title: "Form refused",
					Message: "This form did not come from this session's page (its CSRF token is missing or stale). Reload the page and try again."})
			}
			ctx := auth.WithPrincipal(c.Request().Context(), s.user.Principal())
			ctx = context.WithValue(ctx, sessionKey{}, s)
			c.SetRequest(c.Request().WithContext(ctx))
			return next(c)
		}
	}
}

type sessionKey struct{}

func sessionOf(c echo.Context) *session {
	s, _ := c.Request().Context().Value(sessionKey{}).(*session)
	return s
}

// csrfToken is the session's CSRF token: derived from the session id, which only the
// browser holding the cookie knows, so a page elsewhere cannot forge it, and it needs no row.
func csrfToken(raw string) string {
	m := hmac.New(sha256.New, []byte("cartreg csrf"))
	m.Write([]byte(raw))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// pageData is what every template gets.
type pageData struct {
	Title   string
	User    *User
	CSRF    string
	Message string // an error or notice at the top of the page
	Notice  string
	Nav     string // the current section
	Data    any
}

func (p *Pages) page(c echo.Context, status int, name string, d pageData) error {
	if s := sessionOf(c); s != nil {
		d.User, d.CSRF = &s.user, csrfToken(s.raw)
	}
	if d.Notice == "" {
		d.Notice = c.QueryParam("notice")
	}
	var b strings.Builder
	if err := p.tmpl.ExecuteTemplate(&b, name, d); err != nil {
		return fmt.Errorf("rendering the %s page: %w", name, err)
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	return c.HTML(status, b.String())
}

// home sends each person to their own page.
func (p *Pages) home(c echo.Context) error {
	pr, _ := auth.FromContext(c.Request().Context())
	switch pr.Role {
	case auth.RoleResearcher:
		return c.Redirect(http.StatusSeeOther, "/outcomes")
	case auth.RoleAdmin:
		return c.Redirect(http.StatusSeeOther, "/status")
	}
	return c.Redirect(http.StatusSeeOther, PathWork)
}

const signInCSRFCookie = "cartreg_signin"

func (p *Pages) signInForm(c echo.Context) error {
	// A signed-in browser has no business here.
	if ck, err := c.Cookie(sessionCookie); err == nil {
		if s, err := p.users.session(c.Request().Context(), ck.Value, p.cfg.SessionIdleTimeout); err == nil && s != nil {
			return c.Redirect(http.StatusSeeOther, "/")
		}
	}
	return p.signInPage(c, http.StatusOK, "")
}

// signInPage shows the form with a fresh double-submit token: the same random value in a
// cookie and in the form, which a page elsewhere cannot read or set.
func (p *Pages) signInPage(c echo.Context, status int, message string) error {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	token := base64.RawURLEncoding.EncodeToString(b)
	c.SetCookie(&http.Cookie{Name: signInCSRFCookie, Value: token, Path: PathSignIn, HttpOnly: true,
		Secure: c.IsTLS() || c.Scheme() == "https", SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	return p.page(c, status, "signin", pageData{Title: "Sign in", CSRF: token, Message: message, Data: p.signInOptions(c)})
}

// safeNext keeps a post-sign-in destination on this server: a path, never another origin.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

func (p *Pages) signIn(c echo.Context) error {
	ctx := c.Request().Context()
	name, password := strings.TrimSpace(c.FormValue("name")), c.FormValue("password")
	ev := audit.Event{Interaction: "login", Action: "E", Source: c.RealIP(), Method: http.MethodPost, Path: PathSignIn,
		RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		Agent:     audit.Agent{Kind: audit.KindUser, Who: LocalIssuer + "|" + name, Issuer: LocalIssuer}}
	ck, err := c.Cookie(signInCSRFCookie)
	if err != nil || ck.Value == "" || !hmac.Equal([]byte(ck.Value), []byte(c.FormValue("csrf"))) {
		ev.Outcome, ev.OutcomeText = http.StatusForbidden, "sign-in form without its CSRF token"
		p.d.Audit.Log(ev)
		return p.signInPage(c, http.StatusForbidden, "The sign-in form had expired. Please try again.")
	}
	now := p.d.Clock()
	allowed, err := p.limiter.allow(ctx, now, "name:"+name, "addr:"+c.RealIP())
	if err != nil {
		return err
	}
	if !allowed {
		ev.Outcome, ev.OutcomeText = http.StatusTooManyRequests, "too many failed sign-ins"
		p.d.Audit.Log(ev)
		return p.signInPage(c, http.StatusTooManyRequests, fmt.Sprintf(
			"Too many failed sign-ins for this name or from this address: at most %d in %s (CARTREG_SIGNIN_ATTEMPTS). Wait, then try again.",
			p.cfg.SignInAttempts, p.cfg.SignInWindow))
	}
	u, err := p.users.checkPassword(ctx, name, password)
	if err != nil {
		return err
	}
	if u == nil {
		if err := p.limiter.fail(ctx, now, "name:"+name, "addr:"+c.RealIP()); err != nil {
			return err
		}
		ev.Outcome, ev.OutcomeText = http.StatusUnauthorized, "wrong name or password"
		p.d.Audit.Log(ev)
		return p.signInPage(c, http.StatusUnauthorized, "That name and password do not match an active user.")
	}
	raw, err := p.users.startSession(ctx, u.Name, p.cfg.SessionLifetime)
	if err != nil {
		return err
	}
	pr := u.Principal()
	ev.Agent = audit.Agent{Kind: audit.KindUser, Who: pr.Subject, Issuer: LocalIssuer, Name: pr.Name, Role: string(pr.Role), Sites: pr.Sites}
	ev.Outcome = http.StatusSeeOther
	p.d.Audit.Log(ev)
	c.SetCookie(&http.Cookie{Name: signInCSRFCookie, Value: "", Path: PathSignIn, MaxAge: -1})
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: raw, Path: "/", HttpOnly: true,
		Secure: c.IsTLS() || c.Scheme() == "https", SameSite: http.SameSiteLaxMode})
	return c.Redirect(http.StatusSeeOther, safeNext(c.FormValue("next")))
}

func (p *Pages) signOut(c echo.Context) error {
	s := sessionOf(c)
	if err := p.users.endSession(c.Request().Context(), s.raw); err != nil {
		return err
	}
	pr := s.user.Principal()
	p.d.Audit.Log(audit.Event{Interaction: "logout", Action: "E", Outcome: http.StatusSeeOther, Source: c.RealIP(),
		Method: http.MethodPost, Path: PathSignOut, RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		Agent: audit.Agent{Kind: audit.KindUser, Who: pr.Subject, Issuer: s.user.Issuer(), Name: pr.Name, Role: string(pr.Role), Sites: pr.Sites}})
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
	return c.Redirect(http.StatusSeeOther, PathSignIn+"?notice="+url.QueryEscape("You are signed out."))
}

// limiter counts failed sign-ins per key in a sliding window, in PostgreSQL, so replicas on
// one database share one allowance: an attacker gets it once, not once per replica.
type limiter struct {
	db     *pgxpool.Pool
	max    int
	window time.Duration
}

func limiterKeys(keys []string) [][]byte {
	hashes := make([][]byte, len(keys))
	for i, k := range keys {
		hashes[i] = hashID(k)
	}
	return hashes
}

// allow says whether every key has failed fewer than max times in the window before now.
func (l *limiter) allow(ctx context.Context, now time.Time, keys ...string) (bool, error) {
	var most int
	err := l.db.QueryRow(ctx, `SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM web_signin_failure
		WHERE key_hash = ANY($1) AND failed_at > $2 GROUP BY key_hash) AS f`, limiterKeys(keys), now.Add(-l.window)).Scan(&most)
	if err != nil {
		return false, fmt.Errorf("counting failed sign-ins: %w", err)
	}
	return most < l.max, nil
}

// fail counts a failure against every key, and forgets failures that have left the window.
func (l *limiter) fail(ctx context.Context, now time.Time, keys ...string) error {
	_, err := l.db.Exec(ctx, `WITH gone AS (DELETE FROM web_signin_failure WHERE failed_at <= $3)
		INSERT INTO web_signin_failure (key_hash, failed_at) SELECT k, $2 FROM unnest($1::bytea[]) AS k`,
		limiterKeys(keys), now, now.Add(-l.window))
	if err != nil {
		return fmt.Errorf("counting a failed sign-in: %w", err)
	}
	return nil
}

// errorPage shows a client's mistake on a page: pages answer people, not FHIR clients, but
// with the same status and message an OperationOutcome would carry.
func (p *Pages) errorPage(c echo.Context, err error) error {
	var o *fhir.Outcome
	if errors.As(err, &o) && o.Status < 500 {
		msg := ""
		for _, is := range o.Issues {
			msg += is.Diagnostics + " "
		}
		return p.page(c, o.Status, "error", pageData{Title: http.StatusText(o.Status), Message: strings.TrimSpace(msg)})
	}
	return err
}
