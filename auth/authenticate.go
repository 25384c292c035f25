package auth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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

// oidcProvider is a configured provider with what discovery found of it.
type oidcProvider struct {
	OIDCProvider

	mu       sync.Mutex
	doc      *Discovery
	failedAt time.Time
}

// oidcToken checks an ID or access token of a configured OpenID Connect provider.
func (s *Service) oidcToken(ctx context.Context, p *oidcProvider, raw string) (*Principal, error) {
	keysURL, err := s.providerKeys(ctx, p)
	if err != nil {
		return nil, err
	}
	tok, err := s.parse(ctx, raw, verifier{algs: oidcAlgs, keys: s.remote.source(keysURL)},
		jwt.WithIssuer(p.Issuer), jwt.WithAudience(p.Audience))
	if err != nil {
		return nil, err
	}
	pr, err := p.principal(tok)
	var re *RoleError
	if errors.As(err, &re) {
		return nil, refuse("%s", re.Reason)
	}
	return pr, err
}

// RoleError is a person the provider vouched for, to whom the role mapping gives no role
// here (or several): known, but not let in.
type RoleError struct {
	Subject string // the principal's subject, "iss|sub"
	Reason  string
}

func (e *RoleError) Error() string { return e.Reason }

// principal maps a verified token of the provider to the person it names: one role from the
// role claim, and for a coordinator the sites of the site claim.
func (p *oidcProvider) principal(tok jwt.Token) (*Principal, error) {
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
		return nil, &RoleError{Subject: p.Issuer + "|" + sub, Reason: fmt.Sprintf(
			"%s has no role here: its %q claim (%s) holds no value this server maps to a role", sub, p.RoleClaim, strings.Join(values, ", "))}
	case 1:
		for r := range roles {
			role = r
		}
	default:
		return nil, &RoleError{Subject: p.Issuer + "|" + sub, Reason: fmt.Sprintf(
			"%s has several roles here (its %q claim maps to more than one); give them one", sub, p.RoleClaim)}
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

// VerifyIDToken checks an ID token that issuer's token endpoint gave for an authorization
// code (OpenID Connect Core §3.1.3.7): signed by a key the provider publishes with an
// algorithm of its kind, issued by issuer, for clientID (and, when it names several
// audiences, authorized for clientID by azp), not expired, and carrying nonce, the value the
// sign-in sent. It returns the person as a bearer token of the provider would make them:
// the same role mapping and site claim. A refused token is a *TokenError, a person with no
// role (or several) a *RoleError; any other error is the server's.
func (s *Service) VerifyIDToken(ctx context.Context, issuer, clientID, raw, nonce string) (*Principal, error) {
	p := s.oidc[issuer]
	if p == nil {
		return nil, fmt.Errorf("OpenID Connect provider %q is not configured", issuer)
	}
	if nonce == "" {
		return nil, refuse("the sign-in has no nonce to check the ID token against")
	}
	keysURL, err := s.providerKeys(ctx, p)
	if err != nil {
		return nil, err
	}
	tok, err := s.parse(ctx, raw, verifier{algs: oidcAlgs, keys: s.remote.source(keysURL)},
		jwt.WithIssuer(p.Issuer), jwt.WithAudience(clientID))
	if err != nil {
		return nil, err
	}
	var got string
	if err := tok.Get("nonce", &got); err != nil || subtle.ConstantTimeCompare([]byte(got), []byte(nonce)) != 1 {
		return nil, refuse("the ID token's nonce is not the one this sign-in sent")
	}
	if aud, _ := tok.Audience(); len(aud) > 1 {
		var azp string
		if err := tok.Get("azp", &azp); err != nil || azp != clientID {
			return nil, refuse("the ID token names several audiences but is not authorized for %q (azp)", clientID)
		}
	}
	return p.principal(tok)
}

// Discovery is what a provider's OpenID configuration says of where to find it.
type Discovery struct {
	AuthorizationEndpoint string // where a browser is sent to sign in
	TokenEndpoint         string // where an authorization code is exchanged
	JWKSURI               string // the provider's public keys
}

// Discover returns the configured provider's endpoints from issuer/.well-known/openid-configuration,
// read once and kept. A failed discovery is retried at most once per missReload.
func (s *Service) Discover(ctx context.Context, issuer string) (*Discovery, error) {
	p := s.oidc[issuer]
	if p == nil {
		return nil, fmt.Errorf("OpenID Connect provider %q is not configured", issuer)
	}
	return s.discovery(ctx, p)
}

// providerKeys returns the provider's JWKS URL: the configured one, or the one discovery finds.
func (s *Service) providerKeys(ctx context.Context, p *oidcProvider) (string, error) {
	if p.JWKSURL != "" {
		return p.JWKSURL, nil
	}
	d, err := s.discovery(ctx, p)
	if err != nil {
		return "", err
	}
	return d.JWKSURI, nil
}

func (s *Service) discovery(ctx context.Context, p *oidcProvider) (*Discovery, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.doc != nil {
		return p.doc, nil
	}
	if s.now().Sub(p.failedAt) < missReload {
		return nil, fmt.Errorf("the OpenID configuration of %s could not be read just now", p.Issuer)
	}
	d, err := s.discover(ctx, p.Issuer)
	if err != nil {
		p.failedAt = s.now()
		return nil, err
	}
	p.doc = d
	return d, nil
}

func (s *Service) discover(ctx context.Context, issuer string) (*Discovery, error) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	where := issuer + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading %s: status %s", where, resp.Status)
	}
	var doc struct {
		Issuer                string `json:"issuer"`
		JWKSURI               string `json:"jwks_uri"`
		AuthorizationEndpoint string `json:"authorization_endpoint"`
		TokenEndpoint         string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("reading %s: %w", where, err)
	}
	// OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("%s names issuer %q, not %q", where, doc.Issuer, issuer)
	}
	if err := checkURL(doc.JWKSURI, true); err != nil {
		return nil, fmt.Errorf("%s: jwks_uri %q: %w", where, doc.JWKSURI, err)
	}
	// The endpoints of the code flow are needed only by the pages' sign-in, which checks that
	// they are there; a provider that only issues bearer tokens may leave them out.
	for name, u := range map[string]string{"authorization_endpoint": doc.AuthorizationEndpoint, "token_endpoint": doc.TokenEndpoint} {
		if u != "" {
			if err := checkEndpoint(u); err != nil {
				return nil, fmt.Errorf("%s: %s %q: %w", where, name, u, err)
			}
		}
	}
	return &Discovery{AuthorizationEndpoint: doc.AuthorizationEndpoint, TokenEndpoint: doc.TokenEndpoint, JWKSURI: doc.JWKSURI}, nil
}

// checkEndpoint accepts a provider's endpoint: https (http only to a loopback host), which
// may carry a query (some providers put a tenant there) but no fragment.
func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Host == "" || u.Fragment != "" || (u.Scheme != "https" && (u.Scheme != "http" || !isLoopback(u.Hostname()))) {
		return errors.New("want an absolute https URL without fragment (http only to localhost)")
	}
	return nil
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
