package auth

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"golang.org/x/crypto/bcrypt"
)

// The private claims of this server's access tokens.
const (
	ClaimRole  = "cartreg_role"
	ClaimSites = "cartreg_sites"
)

const (
	jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// maxAssertionAhead is how far ahead a client assertion's exp may be (SMART Backend
	// Services: no more than five minutes), which bounds how long its jti must be remembered.
	maxAssertionAhead = 5 * time.Minute
	maxAssertionSize  = 16 << 10
	// jtiPruneEvery is how often a replica deletes the remembered jtis that have expired.
	jtiPruneEvery = time.Minute
)

// ScopeError is a scope request that cannot be granted.
type ScopeError struct{ Reason string }

func (e *ScopeError) Error() string { return "invalid scope: " + e.Reason }

// oauthError is an RFC 6749 error response of the token endpoint.
type oauthError struct {
	status      int
	code        string
	description string
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func invalidRequest(format string, args ...any) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...)}
}

func invalidClient(format string, args ...any) *oauthError {
	return &oauthError{http.StatusUnauthorized, "invalid_client", fmt.Sprintf(format, args...)}
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// token is POST /auth/token: the client credentials grant, the client authenticated by a
// signed JWT (private_key_jwt) or by HTTP Basic with its secret (client_secret_basic).
func (s *Service) token(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	resp, err := s.grant(c)
	var oe *oauthError
	if errors.As(err, &oe) {
		if oe.status == http.StatusUnauthorized && strings.HasPrefix(c.Request().Header.Get("Authorization"), "Basic ") {
			h.Set("WWW-Authenticate", `Basic realm="cartreg"`)
		}
		s.logger.Info("token request refused", "error", oe.code, "reason", oe.description, "remote_ip", c.RealIP())
		return c.JSON(oe.status, map[string]string{"error": oe.code, "error_description": oe.description})
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, resp)
}

func (s *Service) grant(c echo.Context) (tokenResponse, error) {
	r := c.Request()
	ctx := r.Context()
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return tokenResponse{}, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	if err := r.ParseForm(); err != nil {
		return tokenResponse{}, invalidRequest("the body does not parse as a form: %v", err)
	}
	form := r.PostForm
	for name, values := range form {
		if len(values) > 1 {
			return tokenResponse{}, invalidRequest("parameter %s is given more than once", name)
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return tokenResponse{}, invalidRequest("grant_type is required")
	default:
		return tokenResponse{}, &oauthError{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant type %q is not supported; use client_credentials", gt)}
	}

	id, secret, basic := r.BasicAuth()
	assertion, assertionType := form.Get("client_assertion"), form.Get("client_assertion_type")
	var (
		cc  clientCredentials
		err error
	)
	switch {
	case basic && (assertion != "" || assertionType != ""):
		return tokenResponse{}, invalidRequest("use one client authentication method, not both")
	case form.Get("client_secret") != "":
		return tokenResponse{}, invalidClient("client_secret_post is not supported; send the secret with HTTP Basic")
	case basic:
		cc, err = s.authenticateSecret(ctx, formDecode(id), formDecode(secret))
	case assertion != "" || assertionType != "":
		if assertionType != jwtBearer {
			return tokenResponse{}, invalidClient("client_assertion_type must be %s", jwtBearer)
		}
		cc, err = s.authenticateAssertion(ctx, assertion, form.Get("client_id"))
	default:
		return tokenResponse{}, invalidClient("the client did not authenticate: send client_assertion (private_key_jwt) or HTTP Basic (client_secret_basic)")
	}
	if err != nil {
		return tokenResponse{}, err
	}
	granted, err := grantScopes(cc.Scopes, form.Get("scope"))
	if err != nil {
		return tokenResponse{}, &oauthError{http.StatusBadRequest, "invalid_scope", err.(*ScopeError).Reason}
	}
	token, _, err := s.sign(ctx, cc.Client, granted)
	if err != nil {
		return tokenResponse{}, err
	}
	s.logger.Info("token issued", "client_id", cc.ID, "scope", granted.String())
	return tokenResponse{AccessToken: token, TokenType: "bearer", ExpiresIn: int(s.cfg.TokenLifetime.Seconds()), Scope: granted.String()}, nil
}

// formDecode undoes the form encoding RFC 6749 §2.3.1 asks of Basic credentials.
func formDecode(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		return d
	}
	return s
}

var (
	dummyHashOnce sync.Once
	dummyHash     []byte
)

// authenticateSecret checks a client id and secret. An unknown client costs the same bcrypt
// comparison as a known one, so timing does not tell which ids exist.
func (s *Service) authenticateSecret(ctx context.Context, id, secret string) (clientCredentials, error) {
	cc, err := s.loadClient(ctx, id)
	if err != nil && !errors.Is(err, ErrClientNotFound) {
		return cc, err
	}
	hash := cc.secretHash
	if hash == nil {
		dummyHashOnce.Do(func() { dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a secret"), bcrypt.DefaultCost) })
		hash = dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(secret)) != nil || cc.secretHash == nil {
		return cc, invalidClient("unknown client or wrong secret")
	}
	if cc.Disabled {
		return cc, invalidClient("the client is disabled")
	}
	return cc, nil
}

// authenticateAssertion checks a private_key_jwt client assertion (SMART Backend Services):
// signed with RS384 or ES384 by a key of the client's JWK Set, iss and sub the client id, aud
// this token endpoint, exp at most five minutes ahead, and a jti not used before.
func (s *Service) authenticateAssertion(ctx context.Context, assertion, clientID string) (clientCredentials, error) {
	if len(assertion) > maxAssertionSize {
		return clientCredentials{}, invalidClient("client_assertion is larger than %d bytes", maxAssertionSize)
	}
	unverified, err := jwt.ParseInsecure([]byte(assertion))
	if err != nil {
		return clientCredentials{}, invalidClient("client_assertion is not a JWT")
	}
	iss, _ := unverified.Issuer()
	if iss == "" {
		return clientCredentials{}, invalidClient("client_assertion has no iss: it must be the client id")
	}
	if clientID != "" && clientID != iss {
		return clientCredentials{}, invalidClient("client_id and the assertion's iss differ")
	}
	cc, err := s.loadClient(ctx, iss)
	if errors.Is(err, ErrClientNotFound) {
		return cc, invalidClient("unknown client %q", iss)
	}
	if err != nil {
		return cc, err
	}
	var keys keySource
	switch {
	case cc.jwks != nil:
		set, err := jwk.Parse(cc.jwks)
		if err != nil {
			return cc, fmt.Errorf("client %s: stored JWK Set: %w", cc.ID, err)
		}
		keys = setSource(set)
	case cc.JWKSURL != "":
		keys = s.remote.source(cc.JWKSURL)
	default:
		return cc, invalidClient("the client has no registered keys: it authenticates with client_secret_basic")
	}
	now := s.now()
	tok, err := jwt.Parse([]byte(assertion),
		jwt.WithKeyProvider(verifier{algs: clientAlgs, keys: keys}), jwt.WithContext(ctx),
		jwt.WithValidate(true), jwt.WithClock(jwt.ClockFunc(s.now)), jwt.WithAcceptableSkew(clockSkew),
		jwt.WithIssuer(cc.ID), jwt.WithSubject(cc.ID), jwt.WithAudience(s.TokenEndpoint()),
		jwt.WithRequiredClaim(jwt.ExpirationKey), jwt.WithRequiredClaim(jwt.JwtIDKey))
	if err != nil {
		s.logger.Debug("client assertion refused", "client_id", cc.ID, "error", err)
		return cc, invalidClient("client_assertion: %s", describeJWTError(err, "the client id", s.TokenEndpoint()))
	}
	exp, _ := tok.Expiration()
	if exp.Sub(now) > maxAssertionAhead+clockSkew {
		return cc, invalidClient("client_assertion: exp is more than 5 minutes ahead")
	}
	if cc.Disabled {
		return cc, invalidClient("the client is disabled")
	}
	jti, _ := tok.JwtID()
	if err := s.rememberJTI(ctx, cc.ID, jti, exp.Add(clockSkew)); err != nil {
		return cc, err
	}
	return cc, nil
}

// describeJWTError says in a sentence why a token was refused.
func describeJWTError(err error, wantIss, wantAud string) string {
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return "the token has expired (exp)"
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return "the token is not valid yet (nbf)"
	case errors.Is(err, jwt.InvalidIssuedAtError()):
		return "the token was issued in the future (iat)"
	case errors.Is(err, jwt.InvalidAudienceError()):
		return "aud must be " + wantAud
	case errors.Is(err, jwt.InvalidIssuerError()):
		return "iss must be " + wantIss
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return "a required claim is missing (exp, jti)"
	case errors.Is(err, errNoKey):
		return "it is not signed by a key of its issuer (no key matches its kid and alg)"
	case errors.Is(err, jwt.ValidateError()):
		return "its claims are not valid (sub must equal iss)"
	}
	msg := err.Error()
	if strings.Contains(msg, "is not accepted") || strings.Contains(msg, "no signature algorithm") {
		return "the signature algorithm is not accepted"
	}
	return "the signature could not be verified"
}

// rememberJTI records a client assertion's jti until it expires, and refuses one already
// recorded: the unique key makes two concurrent uses of one jti end with one refused.
func (s *Service) rememberJTI(ctx context.Context, clientID, jti string, until time.Time) error {
	s.pruneJTIs(ctx)
	tag, err := s.db.Exec(ctx, `
		INSERT INTO auth_seen_jti (client_id, jti, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (client_id, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE auth_seen_jti.expires_at <= $4`, clientID, jti, until, s.now())
	if err != nil {
		return fmt.Errorf("recording a client assertion's jti: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return invalidClient("client_assertion: jti %q was used already (a replay)", jti)
	}
	return nil
}

// pruneJTIs deletes the expired jtis, at most once per jtiPruneEvery on a replica; a failure
// only delays it.
func (s *Service) pruneJTIs(ctx context.Context) {
	now := s.now()
	s.pruneMu.Lock()
	due := now.Sub(s.prunedAt) >= jtiPruneEvery
	if due {
		s.prunedAt = now
	}
	s.pruneMu.Unlock()
	if !due {
		return
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM auth_seen_jti WHERE expires_at <= $1`, now); err != nil {
		s.logger.Warn("pruning expired client assertion ids", "error", err)
	}
}

// grantScopes narrows the registered scopes to those requested; an empty request gets all
// of them. A request beyond them is refused rather than trimmed, so a client learns at once.
func grantScopes(registered Scopes, requested string) (Scopes, error) {
	if strings.TrimSpace(requested) == "" {
		return registered, nil
	}
	want, err := ParseScopes(requested)
	if err != nil {
		return Scopes{}, &ScopeError{Reason: err.Error()}
	}
	if ok, first := want.Within(registered); !ok {
		return Scopes{}, &ScopeError{Reason: fmt.Sprintf("scope %q is beyond the client's registered scopes (%s)", first, registered)}
	}
	return want, nil
}

// IssueToken issues an access token to a client without authenticating it, for an operator
// on the server (cartreg token). scope narrows the client's registered scopes as at the token
// endpoint. It fails with ErrClientNotFound, ErrClientDisabled or a *ScopeError.
func (s *Service) IssueToken(ctx context.Context, clientID, scope string) (string, time.Time, error) {
	cc, err := s.loadClient(ctx, clientID)
	if err != nil {
		return "", time.Time{}, err
	}
	if cc.Disabled {
		return "", time.Time{}, ErrClientDisabled
	}
	granted, err := grantScopes(cc.Scopes, scope)
	if err != nil {
		return "", time.Time{}, err
	}
	return s.sign(ctx, cc.Client, granted)
}

// sign makes an access token for the client with the granted scopes.
func (s *Service) sign(ctx context.Context, cl Client, granted Scopes) (string, time.Time, error) {
	key, err := s.keys.signer(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	exp := now.Add(s.cfg.TokenLifetime).Truncate(time.Second)
	sites := cl.Sites
	if sites == nil {
		sites = []string{}
	}
	tok, err := jwt.NewBuilder().
		Issuer(s.cfg.Issuer).Subject(cl.ID).Audience([]string{s.cfg.Issuer}).
		IssuedAt(now).Expiration(exp).JwtID(uuid.NewString()).
		Claim("scope", granted.String()).Claim(ClaimRole, string(cl.Role)).Claim(ClaimSites, sites).
		Build()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("building an access token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(signingAlg, key.private))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signing an access token: %w", err)
	}
	return string(signed), exp, nil
}
