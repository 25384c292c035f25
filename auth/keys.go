package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// signingAlg signs access tokens. ES256 rather than RS256: a P-256 key is generated at once,
// where an RSA key takes long enough to stall a first start or a rotation, and its signatures
// and keys are a fraction of RSA's size; the one verifier of these tokens is cartreg itself,
// so RS256's reach into older verifiers buys nothing.
var signingAlg = jwa.ES256()

const (
	// keyReload is how often a replica rereads the signing keys, so a rotation made by
	// another replica is followed within it.
	keyReload = time.Minute
	// missReload is the least time between rereads caused by a token naming an unknown key,
	// so bogus key ids cannot make every request query the database.
	missReload = 5 * time.Second
	// signingKeyLock serializes the creation and rotation of signing keys across replicas.
	signingKeyLock = `SELECT pg_advisory_xact_lock(hashtext('cartreg.auth.signing_key'))`
)

type signingKey struct {
	kid         string
	private     jwk.Key
	public      jwk.Key
	verifyUntil time.Time // zero while the key is the active one
}

// keyring holds the signing keys of the database in memory, rereading them every keyReload.
type keyring struct {
	db       *pgxpool.Pool
	now      func() time.Time
	lifetime time.Duration

	mu       sync.Mutex
	keys     map[string]*signingKey
	active   *signingKey
	loadedAt time.Time
	missAt   time.Time
}

func newKeyring(db *pgxpool.Pool, now func() time.Time, lifetime time.Duration) *keyring {
	return &keyring{db: db, now: now, lifetime: lifetime}
}

// ensure creates the first signing key if there is none, then loads the keys.
func (k *keyring) ensure(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, k.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, signingKeyLock); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM auth_signing_key WHERE retired_at IS NULL)`).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		_, err := insertSigningKey(ctx, tx, k.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("making the first signing key: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.load(ctx)
}

// rotate retires the active key, keeping it for verification until every token it signed has
// expired (and every replica has seen the new key), deletes keys past that, and adds a new
// active key.
func (k *keyring) rotate(ctx context.Context) (string, error) {
	var kid string
	err := pgx.BeginFunc(ctx, k.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, signingKeyLock); err != nil {
			return err
		}
		now := k.now()
		if _, err := tx.Exec(ctx, `UPDATE auth_signing_key SET retired_at = $1, verify_until = $2 WHERE retired_at IS NULL`,
			now, now.Add(k.lifetime+keyReload+clockSkew)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM auth_signing_key WHERE verify_until <= $1`, now); err != nil {
			return err
		}
		var err error
		kid, err = insertSigningKey(ctx, tx, now)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("rotating the signing key: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return kid, k.load(ctx)
}

func insertSigningKey(ctx context.Context, tx pgx.Tx, now time.Time) (string, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generating a key: %w", err)
	}
	key, err := jwk.Import(raw)
	if err != nil {
		return "", err
	}
	if err := jwk.AssignKeyID(key); err != nil {
		return "", err
	}
	if err := key.Set(jwk.AlgorithmKey, signingAlg); err != nil {
		return "", err
	}
	if err := key.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return "", err
	}
	body, err := json.Marshal(key)
	if err != nil {
		return "", err
	}
	kid, _ := key.KeyID()
	_, err = tx.Exec(ctx, `INSERT INTO auth_signing_key (kid, alg, private_jwk, created_at) VALUES ($1, $2, $3, $4)`,
		kid, signingAlg.String(), body, now)
	return kid, err
}

// load rereads the keys that still sign or verify. The caller holds k.mu.
func (k *keyring) load(ctx context.Context) error {
	now := k.now()
	rows, err := k.db.Query(ctx, `
		SELECT kid, private_jwk, verify_until FROM auth_signing_key
		WHERE retired_at IS NULL OR verify_until > $1`, now)
	if err != nil {
		return fmt.Errorf("reading the signing keys: %w", err)
	}
	keys := map[string]*signingKey{}
	var active *signingKey
	var (
		kid   string
		body  []byte
		until *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&kid, &body, &until}, func() error {
		priv, err := jwk.ParseKey(body)
		if err != nil {
			return fmt.Errorf("signing key %s: %w", kid, err)
		}
		pub, err := priv.PublicKey()
		if err != nil {
			return fmt.Errorf("signing key %s: %w", kid, err)
		}
		sk := &signingKey{kid: kid, private: priv, public: pub}
		if until != nil {
			sk.verifyUntil = *until
		} else {
			active = sk
		}
		keys[kid] = sk
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the signing keys: %w", err)
	}
	if active == nil {
		return errors.New("there is no active signing key")
	}
	k.keys, k.active, k.loadedAt = keys, active, now
	return nil
}

func (k *keyring) fresh(ctx context.Context) error {
	if k.now().Sub(k.loadedAt) < keyReload {
		return nil
	}
	return k.load(ctx)
}

// signer returns the active key.
func (k *keyring) signer(ctx context.Context) (*signingKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.fresh(ctx); err != nil {
		return nil, err
	}
	return k.active, nil
}

// verificationKeys returns the public key named kid if it still verifies.
func (k *keyring) verificationKeys(ctx context.Context, kid string) ([]jwk.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.fresh(ctx); err != nil {
		return nil, err
	}
	now := k.now()
	sk := k.keys[kid]
	if sk == nil && kid != "" && now.Sub(k.missAt) >= missReload {
		k.missAt = now
		if err := k.load(ctx); err != nil {
			return nil, err
		}
		sk = k.keys[kid]
	}
	if sk == nil || (!sk.verifyUntil.IsZero() && !now.Before(sk.verifyUntil)) {
		return nil, nil
	}
	return []jwk.Key{sk.public}, nil
}

// publicSet is every key that still verifies, public parts only.
func (k *keyring) publicSet(ctx context.Context) (jwk.Set, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.fresh(ctx); err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	now := k.now()
	for _, sk := range k.keys {
		if sk.verifyUntil.IsZero() || now.Before(sk.verifyUntil) {
			if err := set.AddKey(sk.public); err != nil {
				return nil, err
			}
		}
	}
	return set, nil
}

// RotateSigningKey makes a new signing key the active one and returns its key id. The
// previous key keeps verifying the tokens it signed until they expire.
func (s *Service) RotateSigningKey(ctx context.Context) (string, error) {
	kid, err := s.keys.rotate(ctx)
	if err == nil {
		s.logger.Info("signing key rotated", "kid", kid)
	}
	return kid, err
}

func (s *Service) jwks(c echo.Context) error {
	set, err := s.keys.publicSet(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=60")
	return c.JSON(http.StatusOK, set)
}
