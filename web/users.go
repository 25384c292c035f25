package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

// User is a person who signs in to the pages with a local password.
type User struct {
	Name        string // what they type to sign in
	DisplayName string
	Role        auth.Role
	Sites       []string // Organization ids a coordinator is limited to
	Disabled    bool
	Created     time.Time
}

// NewUser is what adding a user takes.
type NewUser struct {
	Name        string
	DisplayName string // defaults to Name
	Role        auth.Role
	Sites       []string // required for a coordinator, refused for other roles
	// Password is the user's password; empty makes one, returned by AddUser.
	Password string
}

// MinPasswordLength is the shortest password AddUser accepts (NIST SP 800-63B §5.1.1.2 asks
// for at least 8; a registry of patients' data asks for more).
const MinPasswordLength = 12

// InvalidUserError is a user refused, saying why.
type InvalidUserError struct{ Reason string }

func (e *InvalidUserError) Error() string { return "invalid user: " + e.Reason }

// LocalIssuer prefixes the subject of a locally signed-in person ("local|alice"), as an OIDC
// issuer prefixes theirs, so the audit trail tells the two apart.
const LocalIssuer = "local"

// Issuer is who vouches for the user: LocalIssuer for a local password, else the OpenID
// Connect provider whose sign-in made them. A person of a provider is kept under their
// subject, "iss|sub", as the name; local names never hold a '|', so the two never meet.
func (u *User) Issuer() string {
	if iss, _, ok := strings.Cut(u.Name, "|"); ok {
		return iss
	}
	return LocalIssuer
}

// Principal is the user as the access policy and the audit trail see them: the same roles,
// sites and default scopes as a person signed in through OpenID Connect.
func (u *User) Principal() *auth.Principal {
	subject := LocalIssuer + "|" + u.Name
	if u.Issuer() != LocalIssuer {
		subject = u.Name
	}
	return &auth.Principal{Kind: auth.KindUser, Subject: subject, Name: u.DisplayName,
		Role: u.Role, Sites: u.Sites, Scopes: auth.DefaultScopes(u.Role)}
}

// Users keeps the local users and their sessions in PostgreSQL.
type Users struct {
	db  *pgxpool.Pool
	now func() time.Time
}

// NewUsers returns the users stored in db.
func NewUsers(db *pgxpool.Pool, now func() time.Time) *Users { return &Users{db: db, now: now} }

// AddUser stores a user with a bcrypt hash of their password, returning the password when it
// made one.
func (us *Users) AddUser(ctx context.Context, nu NewUser) (User, string, error) {
	bad := func(format string, args ...any) (User, string, error) {
		return User{}, "", &InvalidUserError{Reason: fmt.Sprintf(format, args...)}
	}
	nu.Name = strings.TrimSpace(nu.Name)
	if nu.Name == "" || strings.ContainsAny(nu.Name, " \t\r\n|") || len(nu.Name) > 100 {
		return bad("a name of at most 100 characters without spaces or '|' is required")
	}
	switch nu.Role {
	case auth.RoleCoordinator, auth.RoleResearcher, auth.RoleAdmin:
	default:
		return bad("role %q: people are coordinator, researcher or admin", nu.Role)
	}
	if nu.Role == auth.RoleCoordinator && len(nu.Sites) == 0 {
		return bad("a coordinator must be given the sites (Organization ids) they work for")
	}
	if nu.Role != auth.RoleCoordinator && len(nu.Sites) > 0 {
		return bad("sites limit coordinators only; a %s sees every site", nu.Role)
	}
	for _, s := range nu.Sites {
		if !fhir.ValidID(s) {
			return bad("site %q is not an Organization id", s)
		}
	}
	made := ""
	if nu.Password == "" {
		made = newPassword()
		nu.Password = made
	}
	if len(nu.Password) < MinPasswordLength {
		return bad("a password needs at least %d characters", MinPasswordLength)
	}
	if len(nu.Password) > 72 {
		return bad("a password may have at most 72 bytes (bcrypt reads no more)")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(nu.Password), bcrypt.DefaultCost)
	if err != nil {
		return User{}, "", fmt.Errorf("hashing the password: %w", err)
	}
	if nu.DisplayName == "" {
		nu.DisplayName = nu.Name
	}
	u := User{Name: nu.Name, DisplayName: nu.DisplayName, Role: nu.Role, Sites: nu.Sites, Created: us.now().UTC()}
	if u.Sites == nil {
		u.Sites = []string{}
	}
	_, err = us.db.Exec(ctx, `INSERT INTO web_user (name, display_name, role, sites, password_hash, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, u.Name, u.DisplayName, string(u.Role), u.Sites, string(hash), u.Created)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return bad("a user named %q exists already", u.Name)
	}
	if err != nil {
		return User{}, "", fmt.Errorf("adding user %s: %w", u.Name, err)
	}
	return u, made, nil
}

// DisableUser signs a user out everywhere and refuses them from then on.
func (us *Users) DisableUser(ctx context.Context, name string) error {
	return pgx.BeginFunc(ctx, us.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE web_user SET disabled_at = $2 WHERE name = $1 AND disabled_at IS NULL`, name, us.now())
		if err != nil {
			return fmt.Errorf("disabling user %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("no enabled user is named %q", name)
		}
		_, err = tx.Exec(ctx, `DELETE FROM web_session WHERE user_name = $1`, name)
		return err
	})
}

// ListUsers returns every user, by name.
func (us *Users) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := us.db.Query(ctx, `SELECT name, display_name, role, sites, disabled_at IS NOT NULL, created_at FROM web_user ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) {
		var u User
		var role string
		err := r.Scan(&u.Name, &u.DisplayName, &role, &u.Sites, &u.Disabled, &u.Created)
		u.Role = auth.Role(role)
		return u, err
	})
}

func newPassword() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

var (
	dummyHashOnce sync.Once
	dummyHash     []byte
)

// checkPassword returns the enabled user name and password name; nil when they do not match.
// An unknown or disabled user costs the same bcrypt comparison as a known one, so the time
// taken does not tell which names exist.
func (us *Users) checkPassword(ctx context.Context, name, password string) (*User, error) {
	var u User
	var role, hash string
	err := us.db.QueryRow(ctx, `SELECT name, display_name, role, sites, password_hash, disabled_at IS NOT NULL, created_at
		FROM web_user WHERE name = $1`, name).Scan(&u.Name, &u.DisplayName, &role, &u.Sites, &hash, &u.Disabled, &u.Created)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("reading user %s: %w", name, err)
	}
	// A person of an OpenID Connect provider has no password here: their name is refused as
	// an unknown one, at the same cost.
	if hash == "" || u.Disabled || u.Issuer() != LocalIssuer {
		dummyHashOnce.Do(func() { dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost) })
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return nil, nil
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return nil, nil
	}
	u.Role = auth.Role(role)
	return &u, nil
}

// session is a signed-in browser.
type session struct {
	raw  string // the cookie's value; only its hash is stored
	user User
}

func hashID(raw string) []byte {
	sum := sha256.Sum256([]byte(raw))
	return sum[:]
}

// startSession stores a new session for the user and returns its id, the cookie's value.
func (us *Users) startSession(ctx context.Context, name string, lifetime time.Duration) (string, error) {
	return newSession(ctx, us.db, name, us.now(), lifetime)
}

func newSession(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, name string, now time.Time, lifetime time.Duration) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	raw := base64.RawURLEncoding.EncodeToString(b)
	_, err := db.Exec(ctx, `INSERT INTO web_session (id_hash, user_name, created_at, last_seen_at, expires_at)
		VALUES ($1, $2, $3, $3, $4)`, hashID(raw), name, now, now.Add(lifetime))
	if err != nil {
		return "", fmt.Errorf("starting a session: %w", err)
	}
	return raw, nil
}

// oidcPasswordHash stands in the password column for a person of an OpenID Connect
// provider: no bcrypt hash, so no password ever matches it.
const oidcPasswordHash = "!oidc"

// startPersonSession records a person an OpenID Connect provider signed in, with the name,
// role and sites its ID token gave them this time, and starts a session for them, in one
// transaction. A person the operator disabled (cartreg user disable 'iss|sub') gets none.
func (us *Users) startPersonSession(ctx context.Context, pr *auth.Principal, lifetime time.Duration) (raw string, disabled bool, err error) {
	sites := pr.Sites
	if sites == nil {
		sites = []string{}
	}
	now := us.now()
	err = pgx.BeginFunc(ctx, us.db, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO web_user (name, display_name, role, sites, password_hash, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name, role = excluded.role, sites = excluded.sites
			RETURNING disabled_at IS NOT NULL`, pr.Subject, pr.Name, string(pr.Role), sites, oidcPasswordHash, now).Scan(&disabled)
		if err != nil {
			return fmt.Errorf("recording %s: %w", pr.Subject, err)
		}
		if disabled {
			return nil
		}
		raw, err = newSession(ctx, tx, pr.Subject, now, lifetime)
		return err
	})
	return raw, disabled, err
}

// session finds the live session raw names, touching its last use. A session idle longer than
// idle, past its expiry, or of a disabled user is deleted and not found.
func (us *Users) session(ctx context.Context, raw string, idle time.Duration) (*session, error) {
	if raw == "" || len(raw) > 100 {
		return nil, nil
	}
	now := us.now()
	var u User
	var role string
	var lastSeen, expires time.Time
	var disabled bool
	err := us.db.QueryRow(ctx, `SELECT s.last_seen_at, s.expires_at, u.name, u.display_name, u.role, u.sites, u.disabled_at IS NOT NULL
		FROM web_session s JOIN web_user u ON u.name = s.user_name WHERE s.id_hash = $1`, hashID(raw)).
		Scan(&lastSeen, &expires, &u.Name, &u.DisplayName, &role, &u.Sites, &disabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading a session: %w", err)
	}
	if disabled || !now.Before(expires) || now.Sub(lastSeen) > idle {
		return nil, us.endSession(ctx, raw)
	}
	// Touch at most once a minute: a page's requests need not each write a row.
	if now.Sub(lastSeen) > time.Minute {
		if _, err := us.db.Exec(ctx, `UPDATE web_session SET last_seen_at = $2 WHERE id_hash = $1`, hashID(raw), now); err != nil {
			return nil, fmt.Errorf("touching a session: %w", err)
		}
	}
	u.Role = auth.Role(role)
	return &session{raw: raw, user: u}, nil
}

// endSession deletes a session (sign-out), and with it any other expired ones.
func (us *Users) endSession(ctx context.Context, raw string) error {
	_, err := us.db.Exec(ctx, `DELETE FROM web_session WHERE id_hash = $1 OR expires_at < $2`, hashID(raw), us.now())
	if err != nil {
		return fmt.Errorf("ending a session: %w", err)
	}
	return nil
}
