package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
)

// OIDCSignIn is the hospital's OpenID Connect provider as the pages offer it to people: the
// authorization code flow with PKCE, whose ID token signs the person in.
type OIDCSignIn struct {
	// Issuer is one of the identity layer's providers (auth.Config.OIDC); empty offers none.
	Issuer string
	// ClientID and ClientSecret are cartreg's registration with the provider; an empty
	// secret makes cartreg a public client, protected by PKCE alone.
	ClientID     string
	ClientSecret string
	// Name is how the sign-in page names the provider: "Sign in with <Name>".
	Name string
	// Timeout is how long a person may take at the provider before the sign-in it started
	// is no longer accepted.
	Timeout time.Duration
}

// DefaultOIDCSignInTimeout leaves time to type a password and a second factor, and no more.
const DefaultOIDCSignInTimeout = 10 * time.Minute

// The paths of the OpenID Connect sign-in: where the browser is sent from, and back to.
const (
	PathOIDCSignIn   = "/signin/oidc"
	PathOIDCCallback = "/signin/oidc/callback"
)

const oidcFlowCookie = "cartreg_oidc"

// oidcFlow is what the browser carries from the start of a sign-in to its return: the state
// the callback must bring back, the nonce the ID token must carry, and the PKCE verifier.
// Each is compared with a value that reaches the server by another way, so a cookie someone
// edits in their own browser signs nobody else in.
type oidcFlow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
	Started  int64  `json:"t"` // Unix seconds
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

// oidcOn says whether the pages offer the provider.
func (p *Pages) oidcOn() bool { return p.cfg.OIDC.Issuer != "" && p.d.Identity != nil }

// oauthConfig is the code flow's client, with the endpoints discovery found.
func (p *Pages) oauthConfig(ctx context.Context) (*oauth2.Config, error) {
	d, err := p.d.Identity.Discover(ctx, p.cfg.OIDC.Issuer)
	if err != nil {
		return nil, err
	}
	if d.AuthorizationEndpoint == "" || d.TokenEndpoint == "" {
		return nil, fmt.Errorf("the OpenID configuration of %s names no authorization or token endpoint", p.cfg.OIDC.Issuer)
	}
	return &oauth2.Config{ClientID: p.cfg.OIDC.ClientID, ClientSecret: p.cfg.OIDC.ClientSecret,
		Endpoint:    oauth2.Endpoint{AuthURL: d.AuthorizationEndpoint, TokenURL: d.TokenEndpoint},
		RedirectURL: strings.TrimRight(p.d.RootURL, "/") + PathOIDCCallback,
		Scopes:      []string{"openid", "profile", "email"}}, nil
}

// oidcStart sends the browser to the provider, with a new state, nonce and PKCE challenge
// kept in a short-lived cookie for the return.
func (p *Pages) oidcStart(c echo.Context) error {
	if !p.oidcOn() {
		return p.page(c, http.StatusNotFound, "error", pageData{Title: "Not found",
			Message: "No OpenID Connect provider is configured for the pages (CARTREG_OIDC_ISSUER): sign in with a name and password."})
	}
	conf, err := p.oauthConfig(c.Request().Context())
	if err != nil {
		p.d.Logger.Error("starting an OpenID Connect sign-in", "err", err)
		return p.page(c, http.StatusBadGateway, "error", pageData{Title: "Sign-in unavailable",
			Message: "The sign-in service of " + p.cfg.OIDC.Name + " could not be reached. Try again in a minute, or sign in with a name and password."})
	}
	f := oidcFlow{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(),
		Next: safeNext(c.QueryParam("next")), Started: p.d.Clock().Unix()}
	raw, _ := json.Marshal(f)
	c.SetCookie(&http.Cookie{Name: oidcFlowCookie, Value: base64.RawURLEncoding.EncodeToString(raw), Path: PathOIDCSignIn,
		HttpOnly: true, Secure: c.IsTLS() || c.Scheme() == "https", SameSite: http.SameSiteLaxMode,
		MaxAge: int(p.cfg.OIDC.Timeout / time.Second)})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Redirect(http.StatusSeeOther, conf.AuthCodeURL(f.State, oauth2.S256ChallengeOption(f.Verifier),
		oauth2.SetAuthURLParam("nonce", f.Nonce)))
}

// oidcCallback finishes the sign-in the provider sends the browser back from: the state
// checked against the cookie's, the code exchanged with the PKCE verifier, the ID token
// verified (signature, issuer, audience, expiry, nonce) and mapped to a role as the
// provider's bearer tokens are. Anything else gets a page saying why, and no session.
func (p *Pages) oidcCallback(c echo.Context) error {
	ctx := c.Request().Context()
	if !p.oidcOn() {
		return p.page(c, http.StatusNotFound, "error", pageData{Title: "Not found",
			Message: "No OpenID Connect provider is configured for the pages."})
	}
	iss := p.cfg.OIDC.Issuer
	ev := audit.Event{Interaction: "login", Action: "E", Source: c.RealIP(), Method: http.MethodGet, Path: PathOIDCCallback,
		RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		Agent:     audit.Agent{Kind: audit.KindUser, Who: iss + "|", Issuer: iss}}
	refuse := func(status int, why, message string) error {
		ev.Outcome, ev.OutcomeText = status, why
		p.d.Audit.Log(ev)
		return p.page(c, status, "error", pageData{Title: "Sign-in refused", Message: message})
	}
	// The flow is used once, whatever happens next.
	c.SetCookie(&http.Cookie{Name: oidcFlowCookie, Value: "", Path: PathOIDCSignIn, MaxAge: -1, HttpOnly: true})
	var f oidcFlow
	ck, err := c.Cookie(oidcFlowCookie)
	if err == nil {
		var raw []byte
		if raw, err = base64.RawURLEncoding.DecodeString(ck.Value); err == nil {
			err = json.Unmarshal(raw, &f)
		}
	}
	const again = " Start again from the sign-in page."
	if err != nil || f.State == "" || f.Nonce == "" || f.Verifier == "" {
		return refuse(http.StatusBadRequest, "OIDC sign-in not started in this browser",
			"This sign-in was not started in this browser, or was already used."+again)
	}
	if age := p.d.Clock().Sub(time.Unix(f.Started, 0)); age < 0 || age > p.cfg.OIDC.Timeout {
		return refuse(http.StatusBadRequest, "OIDC sign-in took too long", fmt.Sprintf(
			"The sign-in took longer than %s at %s (CARTREG_WEB_OIDC_SIGNIN_TIMEOUT).%s", p.cfg.OIDC.Timeout, p.cfg.OIDC.Name, again))
	}
	if subtle.ConstantTimeCompare([]byte(c.QueryParam("state")), []byte(f.State)) != 1 {
		return refuse(http.StatusBadRequest, "OIDC state does not match",
			"The answer from the sign-in service does not belong to the sign-in this browser started."+again)
	}
	if e := clip(c.QueryParam("error"), 100); e != "" {
		return refuse(http.StatusUnauthorized, "OIDC provider refused: "+e, fmt.Sprintf("%s did not sign you in (%s%s).%s",
			p.cfg.OIDC.Name, e, prefixed(": ", clip(c.QueryParam("error_description"), 300)), again))
	}
	code := c.QueryParam("code")
	if code == "" {
		return refuse(http.StatusBadRequest, "OIDC callback without a code", "The sign-in service sent no authorization code."+again)
	}
	conf, err := p.oauthConfig(ctx)
	if err != nil {
		return err
	}
	xctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, p.d.HTTPClient), 15*time.Second)
	defer cancel()
	tok, err := conf.Exchange(xctx, code, oauth2.VerifierOption(f.Verifier))
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		return refuse(http.StatusUnauthorized, "OIDC token endpoint refused the code: "+re.ErrorCode,
			fmt.Sprintf("%s did not accept this sign-in's code (%s): it may have been used already, or have expired.%s",
				p.cfg.OIDC.Name, re.ErrorCode, again))
	case err != nil:
		p.d.Logger.Error("exchanging an OpenID Connect code", "err", err)
		return refuse(http.StatusBadGateway, "OIDC token endpoint unreachable",
			"The sign-in service of "+p.cfg.OIDC.Name+" could not be reached."+again)
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		return refuse(http.StatusUnauthorized, "OIDC token response without an ID token",
			p.cfg.OIDC.Name+" answered without an ID token."+again)
	}
	pr, err := p.d.Identity.VerifyIDToken(ctx, iss, p.cfg.OIDC.ClientID, idToken, f.Nonce)
	var te *auth.TokenError
	var roleErr *auth.RoleError
	switch {
	case errors.As(err, &te):
		return refuse(http.StatusUnauthorized, "ID token refused: "+te.Reason, "The sign-in was refused: "+te.Reason+"."+again)
	case errors.As(err, &roleErr):
		ev.Agent.Who = roleErr.Subject
		return refuse(http.StatusForbidden, "no role here: "+roleErr.Reason, fmt.Sprintf(
			"%s knows you, but gives you no role in the registry (%s). Ask your registry's administrator to give you one.",
			p.cfg.OIDC.Name, roleErr.Reason))
	case err != nil:
		return err
	}
	ev.Agent = audit.Agent{Kind: audit.KindUser, Who: pr.Subject, Issuer: iss, Name: pr.Name, Role: string(pr.Role), Sites: pr.Sites}
	switch {
	case pr.Role == auth.RoleEHR:
		return refuse(http.StatusForbidden, "the ehr role is not a person's", fmt.Sprintf(
			"%s gives you the role of a hospital system (ehr), which has no pages. Ask your registry's administrator for a person's role.", p.cfg.OIDC.Name))
	case pr.Role == auth.RoleCoordinator && len(pr.Sites) == 0:
		return refuse(http.StatusForbidden, "a coordinator without sites", fmt.Sprintf(
			"%s makes you a coordinator, but of no site. Ask your registry's administrator to give you your sites.", p.cfg.OIDC.Name))
	}
	raw, disabled, err := p.users.startPersonSession(ctx, pr, p.cfg.SessionLifetime)
	if err != nil {
		return err
	}
	if disabled {
		return refuse(http.StatusForbidden, "user disabled", "Your access to the registry's pages has been disabled by its administrator.")
	}
	ev.Outcome = http.StatusSeeOther
	p.d.Audit.Log(ev)
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: raw, Path: "/", HttpOnly: true,
		Secure: c.IsTLS() || c.Scheme() == "https", SameSite: http.SameSiteLaxMode})
	return c.Redirect(http.StatusSeeOther, safeNext(f.Next))
}

// clip keeps what a provider's redirect says about an error to a sensible length, in whole
// characters, for the page and the audit trail.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// signInOptions is what the sign-in page offers beside the password form.
type signInOptions struct {
	Next, Name string
	OIDCName   string // "" without a provider
	OIDCURL    string
}

func (p *Pages) signInOptions(c echo.Context) signInOptions {
	o := signInOptions{Next: safeNext(c.FormValue("next")), Name: c.FormValue("name")}
	if p.oidcOn() {
		o.OIDCName = p.cfg.OIDC.Name
		o.OIDCURL = PathOIDCSignIn + "?next=" + url.QueryEscape(o.Next)
	}
	return o
}
