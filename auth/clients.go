package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/cartreg/cartreg/fhir"
	"golang.org/x/crypto/bcrypt"
)

// Client is a registered client, without its secret or keys.
type Client struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Sites     []string  `json:"sites,omitempty"`
	Scopes    Scopes    `json:"scopes"`
	HasSecret bool      `json:"has_secret"`
	JWKSURL   string    `json:"jwks_url,omitempty"`
	Disabled  bool      `json:"disabled"`
	Created   time.Time `json:"created"`
}

// NewClient is what registering a client takes.
type NewClient struct {
	Name   string
	Role   Role
	Sites  []string // Organization ids; required for a coordinator, refused for other roles
	Scopes string   // space-separated; empty means DefaultScopes(Role)
	// JWKS is the client's public keys as a JWK Set, for private_key_jwt. With neither it nor
	// JWKSURL the client gets a secret, for client_secret_basic.
	JWKS    []byte
	JWKSURL string // where the client publishes its JWK Set: https (http only to localhost)
}

// ErrClientNotFound means no client has the id.
var ErrClientNotFound = errors.New("no such client")

// ErrClientDisabled means the client was disabled.
var ErrClientDisabled = errors.New("client is disabled")

// InvalidClientError is a registration refused, saying why.
type InvalidClientError struct{ Reason string }

func (e *InvalidClientError) Error() string { return "invalid client registration: " + e.Reason }

// AddClient registers a client. The secret is returned only for a client registered without
// keys, and only here: the database keeps a bcrypt hash of it.
func (s *Service) AddClient(ctx context.Context, nc NewClient) (Client, string, error) {
	bad := func(format string, args ...any) (Client, string, error) {
		return Client{}, "", &InvalidClientError{Reason: fmt.Sprintf(format, args...)}
	}
	nc.Name = strings.TrimSpace(nc.Name)
	if nc.Name == "" {
		return bad("a name is required")
	}
	if !nc.Role.Valid() {
		return bad("role %q is not one of ehr, coordinator, researcher, admin", nc.Role)
	}
	if nc.Role == RoleCoordinator && len(nc.Sites) == 0 {
		return bad("a coordinator must be given the sites (Organization ids) it works for")
	}
	if nc.Role != RoleCoordinator && len(nc.Sites) > 0 {
		return bad("sites limit coordinators only; a %s client reaches every site", nc.Role)
	}
	for _, site := range nc.Sites {
		if !fhir.ValidID(site) {
			return bad("site %q is not an Organization id", site)
		}
	}
	scopes := DefaultScopes(nc.Role)
	if strings.TrimSpace(nc.Scopes) != "" {
		var err error
		if scopes, err = ParseScopes(nc.Scopes); err != nil {
			return bad("%v", err)
		}
	}
	if len(nc.JWKS) > 0 && nc.JWKSURL != "" {
		return bad("give either a JWK Set or its URL, not both")
	}
	var jwks []byte
	if len(nc.JWKS) > 0 {
		set, err := parseClientKeys(nc.JWKS)
		if err != nil {
			return bad("%v", err)
		}
		if jwks, err = json.Marshal(set); err != nil {
			return Client{}, "", err
		}
	}
	if nc.JWKSURL != "" {
		if err := checkURL(nc.JWKSURL, true); err != nil {
			return bad("JWKS URL %q: %v", nc.JWKSURL, err)
		}
	}
	var secret string
	var secretHash []byte
	if jwks == nil && nc.JWKSURL == "" {
		buf := make([]byte, 32)
		if _, err := rand.Read(buf); err != nil {
			return Client{}, "", err
		}
		secret = base64.RawURLEncoding.EncodeToString(buf)
		var err error
		if secretHash, err = bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost); err != nil {
			return Client{}, "", fmt.Errorf("hashing the client secret: %w", err)
		}
	}
	cl := Client{
		ID: uuid.NewString(), Name: nc.Name, Role: nc.Role, Sites: nc.Sites, Scopes: scopes,
		HasSecret: secret != "", JWKSURL: nc.JWKSURL, Created: s.now().UTC(),
	}
	if cl.Sites == nil {
		cl.Sites = []string{}
	}
	_, err := s.db.Exec(ctx, `
		INSERT INTO auth_client (id, name, role, sites, scopes, secret_hash, jwks, jwks_url, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''), $9)`,
		cl.ID, cl.Name, string(cl.Role), cl.Sites, scopes.String(), nilIfEmpty(secretHash), nilIfEmpty(jwks), cl.JWKSURL, cl.Created)
	if err != nil {
		return Client{}, "", fmt.Errorf("registering a client: %w", err)
	}
	s.logger.Info("client registered", "client_id", cl.ID, "name", cl.Name, "role", cl.Role)
	return cl, secret, nil
}

func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// parseClientKeys accepts a JWK Set of public RSA (2048 bits or more) and EC keys, each with
// a unique kid, as a client assertion's header must name its key.
func parseClientKeys(data []byte) (jwk.Set, error) {
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("the JWK Set does not parse: %w", err)
	}
	if set.Len() == 0 {
		return nil, errors.New("the JWK Set has no keys")
	}
	kids := map[string]bool{}
	for i := range set.Len() {
		key, _ := set.Key(i)
		kid, _ := key.KeyID()
		if kid == "" {
			return nil, fmt.Errorf("key %d has no kid", i)
		}
		if kids[kid] {
			return nil, fmt.Errorf("kid %q is used twice", kid)
		}
		kids[kid] = true
		if private, err := jwk.IsPrivateKey(key); err != nil || private {
			return nil, fmt.Errorf("key %q: register public keys only (the private key never leaves the client)", kid)
		}
		switch key.KeyType() {
		case jwa.RSA():
			rk, ok := key.(jwk.RSAPublicKey)
			if n, _ := rk.N(); !ok || len(n)*8 < 2048 {
				return nil, fmt.Errorf("key %q: an RSA key must have at least 2048 bits", kid)
			}
		case jwa.EC():
		default:
			return nil, fmt.Errorf("key %q: key type %s is not RSA or EC", kid, key.KeyType())
		}
	}
	return set, nil
}

const clientColumns = `id, name, role, sites, scopes, secret_hash IS NOT NULL, coalesce(jwks_url, ''), disabled_at IS NOT NULL, created_at`

func scanClient(row pgx.Row, extra ...any) (Client, error) {
	var cl Client
	var role, scopes string
	dest := append([]any{&cl.ID, &cl.Name, &role, &cl.Sites, &scopes, &cl.HasSecret, &cl.JWKSURL, &cl.Disabled, &cl.Created}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Client{}, err
	}
	cl.Role = Role(role)
	var err error
	if cl.Scopes, err = ParseScopes(scopes); err != nil {
		return Client{}, fmt.Errorf("client %s: stored scopes: %w", cl.ID, err)
	}
	return cl, nil
}

// ListClients returns every client, the oldest first.
func (s *Service) ListClients(ctx context.Context) ([]Client, error) {
	rows, err := s.db.Query(ctx, `SELECT `+clientColumns+` FROM auth_client ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("listing clients: %w", err)
	}
	defer rows.Close()
	var out []Client
	for rows.Next() {
		cl, err := scanClient(rows)
		if err != nil {
			return nil, fmt.Errorf("listing clients: %w", err)
		}
		out = append(out, cl)
	}
	return out, rows.Err()
}

// DisableClient refuses the client from now on: its token requests at once, its tokens
// within clientCacheTTL. Disabling a disabled client changes nothing.
func (s *Service) DisableClient(ctx context.Context, id string) error {
	tag, err := s.db.Exec(ctx, `UPDATE auth_client SET disabled_at = coalesce(disabled_at, $2) WHERE id = $1`, id, s.now())
	if err != nil {
		return fmt.Errorf("disabling client %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrClientNotFound
	}
	s.clients.forget(id)
	s.logger.Info("client disabled", "client_id", id)
	return nil
}

// clientCredentials is a client with what it authenticates with.
type clientCredentials struct {
	Client
	secretHash []byte
	jwks       []byte
}

func (s *Service) loadClient(ctx context.Context, id string) (clientCredentials, error) {
	var cc clientCredentials
	row := s.db.QueryRow(ctx, `SELECT `+clientColumns+`, secret_hash, jwks FROM auth_client WHERE id = $1`, id)
	cl, err := scanClient(row, &cc.secretHash, &cc.jwks)
	if errors.Is(err, pgx.ErrNoRows) {
		return cc, ErrClientNotFound
	}
	if err != nil {
		return cc, fmt.Errorf("reading client %s: %w", id, err)
	}
	cc.Client = cl
	return cc, nil
}

// clientCacheTTL is how long a replica trusts what it read of a client when checking its
// access tokens: disabling a client takes effect within it on every replica, without a
// database query on every request.
const clientCacheTTL = 30 * time.Second

type cachedClient struct {
	name     string
	disabled bool
	found    bool
	at       time.Time
}

type clientCache struct {
	mu      sync.Mutex
	entries map[string]cachedClient
}

func newClientCache() *clientCache { return &clientCache{entries: map[string]cachedClient{}} }

func (c *clientCache) forget(id string) {
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
}

// clientStatus says whether the client exists and is enabled, and its name.
func (s *Service) clientStatus(ctx context.Context, id string) (cachedClient, error) {
	now := s.now()
	s.clients.mu.Lock()
	e, ok := s.clients.entries[id]
	s.clients.mu.Unlock()
	if ok && now.Sub(e.at) < clientCacheTTL && !now.Before(e.at) {
		return e, nil
	}
	e = cachedClient{at: now}
	err := s.db.QueryRow(ctx, `SELECT name, disabled_at IS NOT NULL FROM auth_client WHERE id = $1`, id).Scan(&e.name, &e.disabled)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return e, fmt.Errorf("reading client %s: %w", id, err)
	default:
		e.found = true
	}
	s.clients.mu.Lock()
	if len(s.clients.entries) > 10000 { // bounded: ids come from verified tokens, but be safe
		clear(s.clients.entries)
	}
	s.clients.entries[id] = e
	s.clients.mu.Unlock()
	return e, nil
}
