package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// The paths Register serves. Middleware never asks for a token on them.
const (
	PathSMARTConfiguration     = "/.well-known/smart-configuration"
	PathFHIRSMARTConfiguration = "/fhir/.well-known/smart-configuration" // where SMART clients look: under the FHIR base
	PathToken                  = "/auth/token"
	PathJWKS                   = "/auth/jwks.json"
)

// Config configures the identity layer.
type Config struct {
	// Issuer is this server's root URL, such as https://registry.example (the FHIR base is
	// Issuer/fhir): the iss and aud of the tokens it issues, and the base of the token
	// endpoint, Issuer/auth/token, which a client assertion's aud must name.
	Issuer string
	// TokenLifetime is how long an access token lasts: 5 minutes unless set, at most an hour.
	TokenLifetime time.Duration
	// OIDC lists the identity providers whose tokens sign people in.
	OIDC []OIDCProvider
}

// OIDCProvider is an OpenID Connect issuer whose ID or access tokens are accepted for people.
type OIDCProvider struct {
	Issuer   string // must equal the tokens' iss exactly
	Audience string // a token's aud must include it (the client id registered with the provider)
	// JWKSURL is where the provider's keys are; empty means the jwks_uri of
	// Issuer/.well-known/openid-configuration.
	JWKSURL string
	// RoleClaim names the claim holding the person's role(s), a string or an array, such as
	// "roles", "groups" or "cartreg_role"; a nested claim may be given as a dotted path
	// ("realm_access.roles") when no top-level claim has the whole name.
	RoleClaim string
	// SiteClaim names the claim holding a coordinator's sites (Organization ids), a string or
	// an array; empty means people have none.
	SiteClaim string
	// RoleMap maps a RoleClaim value to a role. Values it does not map are ignored; a person
	// with none mapped is refused, as is one whose values map to different roles.
	RoleMap map[string]Role
}

const (
	defaultTokenLifetime = 5 * time.Minute
	maxTokenLifetime     = time.Hour
	// clockSkew is the leeway for exp, nbf and iat between this server and other clocks.
	clockSkew = 30 * time.Second
)

// Service is the identity layer: registered clients, the token endpoint, the signing keys,
// and the checking of bearer tokens, its own and OIDC providers'.
type Service struct {
	db     *pgxpool.Pool
	cfg    Config
	now    func() time.Time
	logger *slog.Logger

	keys    *keyring
	clients *clientCache
	// verified remembers this server's tokens whose signature and claims were checked, so a
	// client's next requests with the same token cost a map lookup, not a signature check.
	verified *tokenCache
	remote   *remoteKeys
	oidc     map[string]*oidcProvider // by issuer
	http     *http.Client             // OIDC discovery

	pruneMu  sync.Mutex
	prunedAt time.Time

	closeOnce sync.Once
	stop      context.CancelFunc
}

// New checks the configuration, makes sure a signing key exists (generating the first on a new
// database) and starts the cache of remote key sets, which lives until Close.
func New(ctx context.Context, db *pgxpool.Pool, cfg Config, now func() time.Time, logger *slog.Logger) (*Service, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	s := &Service{
		db: db, cfg: cfg, now: now, logger: logger,
		clients:  newClientCache(),
		verified: newTokenCache(),
		oidc:     map[string]*oidcProvider{},
		http:     jwk.DefaultHTTPClient(),
	}
	for _, p := range cfg.OIDC {
		s.oidc[p.Issuer] = &oidcProvider{OIDCProvider: p}
	}
	s.keys = newKeyring(db, now, cfg.TokenLifetime)
	if err := s.keys.ensure(ctx); err != nil {
		return nil, err
	}
	// The cache's fetchers outlive New's context: they serve every later request.
	cacheCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	cache, err := jwk.NewCache(cacheCtx, httprc.NewClient())
	if err != nil {
		stop()
		return nil, fmt.Errorf("starting the JWK Set cache: %w", err)
	}
	s.stop = stop
	s.remote = newRemoteKeys(cache, now)
	return s, nil
}

// Close stops the cache of remote key sets.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.remote.cache.Shutdown(ctx)
		s.stop()
	})
}

func (c *Config) normalize() error {
	c.Issuer = strings.TrimRight(c.Issuer, "/")
	if err := checkURL(c.Issuer, false); err != nil {
		return fmt.Errorf("auth: issuer: %w", err)
	}
	if c.TokenLifetime == 0 {
		c.TokenLifetime = defaultTokenLifetime
	}
	if c.TokenLifetime < time.Minute || c.TokenLifetime > maxTokenLifetime {
		return fmt.Errorf("auth: token lifetime %s: want between 1m and %s", c.TokenLifetime, maxTokenLifetime)
	}
	seen := map[string]bool{}
	for i, p := range c.OIDC {
		switch {
		case checkURL(p.Issuer, true) != nil:
			return fmt.Errorf("auth: OIDC provider %d: issuer %q: %w", i, p.Issuer, checkURL(p.Issuer, true))
		case p.Issuer == c.Issuer:
			return fmt.Errorf("auth: OIDC provider %q is this server's own issuer", p.Issuer)
		case seen[p.Issuer]:
			return fmt.Errorf("auth: OIDC provider %q is configured twice", p.Issuer)
		case p.Audience == "":
			return fmt.Errorf("auth: OIDC provider %q: an audience is required", p.Issuer)
		case p.RoleClaim == "":
			return fmt.Errorf("auth: OIDC provider %q: a role claim is required", p.Issuer)
		case len(p.RoleMap) == 0:
			return fmt.Errorf("auth: OIDC provider %q: a role map is required", p.Issuer)
		case p.JWKSURL != "" && checkURL(p.JWKSURL, true) != nil:
			return fmt.Errorf("auth: OIDC provider %q: JWKS URL: %w", p.Issuer, checkURL(p.JWKSURL, true))
		}
		for v, r := range p.RoleMap {
			if !r.Valid() {
				return fmt.Errorf("auth: OIDC provider %q: %q maps to unknown role %q", p.Issuer, v, r)
			}
		}
		seen[p.Issuer] = true
	}
	return nil
}

// checkURL accepts an absolute http(s) URL without query or fragment; with httpsOnly, plain
// http only to a loopback host (a local test or development issuer).
func checkURL(s string, httpsOnly bool) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("want an absolute http or https URL without query or fragment")
	}
	if httpsOnly && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return errors.New("want https (http only to localhost)")
	}
	return nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// TokenEndpoint is the absolute URL of the token endpoint.
func (s *Service) TokenEndpoint() string { return s.cfg.Issuer + PathToken }

// Register adds the SMART configuration, the token endpoint and the public keys to e.
func (s *Service) Register(e *echo.Echo) {
	e.GET(PathSMARTConfiguration, s.smartConfiguration)
	e.GET(PathFHIRSMARTConfiguration, s.smartConfiguration)
	e.POST(PathToken, s.token)
	e.GET(PathJWKS, s.jwks)
}

// isOwnPath says whether the request is for one of Register's endpoints, which must stay
// reachable without a token (a client needs the token endpoint to get one).
func isOwnPath(p string) bool {
	switch strings.TrimRight(p, "/") {
	case PathSMARTConfiguration, PathFHIRSMARTConfiguration, PathToken, PathJWKS:
		return true
	}
	return false
}

// The client authentication methods and assertion algorithms the token endpoint supports.
var (
	authMethods   = []string{"private_key_jwt", "client_secret_basic"}
	assertionAlgs = []string{"RS384", "ES384"}
)

func (s *Service) smartConfiguration(c echo.Context) error {
	scopes := []string{"system/*.read", "system/*.write", "system/*.*", "system/*.rs", "system/*.cruds"}
	scopes = append(scopes, plainScopes...)
	c.Response().Header().Set("Cache-Control", "public, max-age=3600")
	return c.JSON(http.StatusOK, map[string]any{
		"token_endpoint":                                   s.TokenEndpoint(),
		"token_endpoint_auth_methods_supported":            authMethods,
		"token_endpoint_auth_signing_alg_values_supported": assertionAlgs,
		"grant_types_supported":                            []string{"client_credentials"},
		"scopes_supported":                                 scopes,
		"capabilities": []string{
			"client-confidential-asymmetric", "client-confidential-symmetric", "permission-v1", "permission-v2",
		},
		"jwks_uri": s.cfg.Issuer + PathJWKS,
	})
}

// SecurityExtension is the CapabilityStatement's rest.security for a server whose root URL is
// issuer: SMART on FHIR, with the token endpoint in the oauth-uris extension.
func SecurityExtension(issuer string) map[string]any {
	issuer = strings.TrimRight(issuer, "/")
	return map[string]any{
		"extension": []any{map[string]any{
			"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
			"extension": []any{
				map[string]any{"url": "token", "valueUri": issuer + PathToken},
			},
		}},
		"service": []any{map[string]any{
			"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
				"code":   "SMART-on-FHIR",
			}},
			"text": "OAuth2 client credentials (SMART Backend Services) and OpenID Connect bearer tokens",
		}},
		"description": "Every request needs a bearer token: from " + issuer + PathToken +
			" (client_credentials with private_key_jwt or client_secret_basic), or from a configured OpenID Connect provider.",
	}
}
