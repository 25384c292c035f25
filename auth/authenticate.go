package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/cartreg/cartreg/fhir"
)

// ErrNoToken means the request carries no bearer token.
var ErrNoToken = errors.New("no bearer token")

// TokenError is a bearer token that was given and refused, saying why.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

func refuse(format string, args ...any) error {
	return &TokenError{Reason: fmt.Sprintf(format, args...)}
}

// keyFetchError marks a failure to get verification keys (the database, a provider's key
// endpoint): the server's trouble, not a bad token.
type keyFetchError struct{ err error }

func (e *keyFetchError) Error() string { return e.err.Error() }
func (e *keyFetchError) Unwrap() error { return e.err }

func fetchErrors(src keySource) keySource {
	return func(ctx context.Context, kid string) ([]jwk.Key, error) {
		keys, err := src(ctx, kid)
		if err != nil {
			return nil, &keyFetchError{err}
		}
		return keys, nil
	}
}

// Authenticate finds who the request's bearer token stands for: a client, by an access token
// this server issued, or a person, by a token of a configured OIDC provider. It returns
// ErrNoToken without a token, a *TokenError for a token refused, and any other error when the
// server could not check it.
func (s *Service) Authenticate(r *http.Request) (*Principal, error) {
	raw, err := bearerToken(r)
	if err != nil {
		return nil, err
	}
	if v, ok := s.verified.get(raw, s.now()); ok {
		return s.ownPrincipal(r.Context(), v)
	}
	unverified, err := jwt.ParseInsecure([]byte(raw))
	if err != nil {
		return nil, refuse("the bearer token is not a JWT")
	}
	iss, _ := unverified.Issuer()
	ctx := r.Context()
	if iss == s.cfg.Issuer {
		return s.ownToken(ctx, raw)
	}
	if p := s.oidc[iss]; p != nil {
		return s.oidcToken(ctx, p, raw)
	}
	return nil, refuse("tokens of issuer %q are not accepted here", iss)
}

func bearerToken(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", ErrNoToken
	}
	scheme, token, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ErrNoToken // other credentials are not a token (RFC 6750 §3.1)
	}
	if token = strings.TrimSpace(token); token == "" {
		return "", refuse("the Authorization header names no token after Bearer")
	}
	return token, nil
}

// parse verifies a token's signature and claims; failures to fetch keys are returned as they
// are, every other failure as a *TokenError.
func (s *Service) parse(ctx context.Context, raw string, v verifier, options ...jwt.ParseOption) (jwt.Token, error) {
	v.keys = fetchErrors(v.keys)
	options = append(options,
		jwt.WithKeyProvider(v), jwt.WithContext(ctx), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(s.now)), jwt.WithAcceptableSkew(clockSkew),
		jwt.WithRequiredClaim(jwt.ExpirationKey), jwt.WithRequiredClaim(jwt.SubjectKey))
	tok, err := jwt.Parse([]byte(raw), options...)
	if err != nil {
		var fe *keyFetchError
		if errors.As(err, &fe) {
			return nil, fe.err
		}
		return nil, refuse("%s", describeJWTError(err, "the issuer", "this server"))
	}
	return tok, nil
}

// ownToken checks an access token this server issued.
func (s *Service) ownToken(ctx context.Context, raw string) (*Principal, error) {
	tok, err := s.parse(ctx, raw, verifier{algs: []jwa.SignatureAlgorithm{signingAlg}, keys: s.keys.verificationKeys},
		jwt.WithIssuer(s.cfg.Issuer), jwt.WithAudience(s.cfg.Issuer))
	if err != nil {
		return nil, err
	}
	sub, _ := tok.Subject()
	var role, scope string
	_ = tok.Get(ClaimRole, &role)
	_ = tok.Get("scope", &scope)
	scopes, err := ParseScopes(scope)
	if err != nil || !Role(role).Valid() {
		return nil, refuse("the token's role or scope is not valid")
	}
	exp, _ := tok.Expiration()
	v := verifiedToken{subject: sub, role: Role(role), sites: claimStrings(tok, ClaimSites), scopes: scopes, expires: exp}
	s.verified.put(raw, v, s.now())
	return s.ownPrincipal(ctx, v)
}

// ownPrincipal is the principal of a verified token of this server, while its client is
// still registered and enabled.
func (s *Service) ownPrincipal(ctx context.Context, v verifiedToken) (*Principal, error) {
	st, err := s.clientStatus(ctx, v.subject)
	switch {
	case err != nil:
		return nil, err
	case !st.found:
		return nil, refuse("the token's client no longer exists")
	case st.disabled:
		return nil, refuse("the token's client is disabled")
	}
	return &Principal{Kind: KindClient, Subject: v.subject, Name: st.name, Role: v.role, Sites: v.sites, Scopes: v.scopes}, nil
}

// oidcProvider is a configured provider with the key URL found by discovery.
type oidcProvider struct {
	OIDCProvider

	mu       sync.Mutex
	jwksURL  string
	failedAt time.Time
}

// oidcToken checks an ID or access token of a configured OpenID Connect provider.
func (s *Service) oidcToken(ctx context.Context, p *oidcProvider, raw string) (*Principal, error) {
	url, err := s.providerKeys(ctx, p)
	if err != nil {
		return nil, err
	}
	tok, err := s.parse(ctx, raw, verifier{algs: oidcAlgs, keys: s.remote.source(url)},
		jwt.WithIssuer(p.Issuer), jwt.WithAudience(p.Audience))
	if err != nil {
		return nil, err
	}
	sub, _ := tok.Subject()
	roles := map[Role]bool{}
	values := claimStrings(tok, p.RoleClaim)
	for _, v := range values {
		if r, ok := p.RoleMap[v]; ok {
			roles[r] = true
		}
	}
	var role Role
	switch len(roles) {
	case 0:
		return nil, refuse("%s has no role here: its %q claim (%s) holds no value this server maps to a role",
			sub, p.RoleClaim, strings.Join(values, ", "))
	case 1:
		for r := range roles {
			role = r
		}
	default:
		return nil, refuse("%s has several roles here (its %q claim maps to more than one); give them one", sub, p.RoleClaim)
	}
	pr := &Principal{Kind: KindUser, Subject: p.Issuer + "|" + sub, Role: role, Scopes: DefaultScopes(role)}
	if role == RoleCoordinator && p.SiteClaim != "" {
		pr.Sites = claimStrings(tok, p.SiteClaim)
	}
	for _, claim := range []string{"name", "email", "preferred_username"} {
		if names := claimStrings(tok, claim); len(names) == 1 && names[0] != "" {
			pr.Name = names[0]
			break
		}
	}
	if pr.Name == "" {
		pr.Name = sub
	}
	return pr, nil
}

// providerKeys returns the provider's JWKS URL, discovering it from the provider's OpenID
// configuration the first time. A failed discovery is retried at most once per missReload.
func (s *Service) providerKeys(ctx context.Context, p *oidcProvider) (string, error) {
	if p.JWKSURL != "" {
		return p.JWKSURL, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.jwksURL != "" {
		return p.jwksURL, nil
	}
	if s.now().Sub(p.failedAt) < missReload {
		return "", fmt.Errorf("the OpenID configuration of %s could not be read just now", p.Issuer)
	}
	url, err := s.discover(ctx, p.Issuer)
	if err != nil {
		p.failedAt = s.now()
		return "", err
	}
	p.jwksURL = url
	return url, nil
}

func (s *Service) discover(ctx context.Context, issuer string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	where := issuer + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("reading %s: status %s", where, resp.Status)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", fmt.Errorf("reading %s: %w", where, err)
	}
	// OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
	if doc.Issuer != issuer {
		return "", fmt.Errorf("%s names issuer %q, not %q", where, doc.Issuer, issuer)
	}
	if err := checkURL(doc.JWKSURI, true); err != nil {
		return "", fmt.Errorf("%s: jwks_uri %q: %w", where, doc.JWKSURI, err)
	}
	return doc.JWKSURI, nil
}

// claimStrings reads a claim holding a string or an array of strings. A name with dots that
// is not itself a claim is followed as a path into nested objects.
func claimStrings(tok jwt.Token, name string) []string {
	var v any
	if err := tok.Get(name, &v); err != nil {
		first, rest, ok := strings.Cut(name, ".")
		if !ok || tok.Get(first, &v) != nil {
			return nil
		}
		for _, part := range strings.Split(rest, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[part]
		}
	}
	switch v := v.(type) {
	case string:
		return []string{v}
	case []string:
		return v
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// realm is the protection space named in WWW-Authenticate.
const realm = "cartreg"

// Middleware authenticates every request but those public says are public and those for
// Register's own endpoints, and puts the Principal in the request's context. A request
// without a valid token gets 401, a WWW-Authenticate challenge (RFC 6750) and an
// OperationOutcome; a failure to check a token goes to echo's error handler as a server fault.
func (s *Service) Middleware(public func(c echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if isOwnPath(c.Request().URL.Path) || (public != nil && public(c)) {
				return next(c)
			}
			p, err := s.Authenticate(c.Request())
			var te *TokenError
			switch {
			case errors.Is(err, ErrNoToken):
				return s.unauthorized(c, nil)
			case errors.As(err, &te):
				return s.unauthorized(c, te)
			case err != nil:
				return fmt.Errorf("checking a bearer token: %w", err)
			}
			c.SetRequest(c.Request().WithContext(WithPrincipal(c.Request().Context(), p)))
			return next(c)
		}
	}
}

func (s *Service) unauthorized(c echo.Context, te *TokenError) error {
	challenge := `Bearer realm="` + realm + `"`
	msg := "this request needs a bearer token: get one from " + s.TokenEndpoint() + " or from a trusted OpenID Connect provider"
	if te != nil {
		challenge += `, error="invalid_token", error_description="` + quotable(te.Reason) + `"`
		msg = "the bearer token was refused: " + te.Reason
		s.logger.Debug("bearer token refused", "reason", te.Reason, "path", c.Request().URL.Path)
	}
	c.Response().Header().Set("WWW-Authenticate", challenge)
	o := fhir.NewOutcome(http.StatusUnauthorized, fhir.IssueType("login"), msg)
	body, err := fhir.MarshalOutcome(o.Issues, fhir.Pretty(c))
	if err != nil {
		return err
	}
	return c.Blob(o.Status, fhir.ContentType, body)
}

// quotable keeps the characters RFC 6750 allows in error_description: printable ASCII
// without '"' and '\'.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}
