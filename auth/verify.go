package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// keySource gives the candidate keys for a signature: those whose key id is kid, or every
// key when kid is empty.
type keySource func(ctx context.Context, kid string) ([]jwk.Key, error)

// verifier hands jwx the keys a signature may be checked with. It refuses any algorithm not
// in algs before a key is looked at, so "none", HMAC with a public key as its secret, or an
// algorithm the key was not meant for never reach the cryptography.
type verifier struct {
	algs []jwa.SignatureAlgorithm
	keys keySource
}

var (
	// oidcAlgs are the asymmetric algorithms accepted from OpenID Connect providers.
	oidcAlgs = []jwa.SignatureAlgorithm{
		jwa.RS256(), jwa.RS384(), jwa.RS512(), jwa.PS256(), jwa.PS384(), jwa.PS512(),
		jwa.ES256(), jwa.ES384(), jwa.ES512(),
	}
	// clientAlgs are those SMART Backend Services asks of a client assertion.
	clientAlgs = []jwa.SignatureAlgorithm{jwa.RS384(), jwa.ES384()}
)

// errNoKey is the cause when no key fits a signature's kid and algorithm.
var errNoKey = errors.New("no key of the issuer matches the token's key id and algorithm")

// FetchKeys implements jws.KeyProvider.
func (v verifier) FetchKeys(ctx context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
	h := sig.ProtectedHeaders()
	alg, ok := h.Algorithm()
	if !ok {
		return errors.New("the token names no signature algorithm")
	}
	if !slices.Contains(v.algs, alg) {
		return fmt.Errorf("signature algorithm %q is not accepted", alg)
	}
	kid, _ := h.KeyID()
	keys, err := v.keys(ctx, kid)
	if err != nil {
		return err
	}
	found := false
	for _, key := range keys {
		if fits(key, alg) {
			sink.Key(alg, key)
			found = true
		}
	}
	if !found {
		return errNoKey
	}
	return nil
}

// fits says whether key may verify alg: the right key type, meant for signatures, and no other
// algorithm named.
func fits(key jwk.Key, alg jwa.SignatureAlgorithm) bool {
	if use, ok := key.KeyUsage(); ok && use != "" && use != jwk.ForSignature.String() {
		return false
	}
	if a, ok := key.Algorithm(); ok && a.String() != alg.String() {
		return false
	}
	switch alg.String()[:2] {
	case "RS", "PS":
		return key.KeyType() == jwa.RSA()
	case "ES":
		return key.KeyType() == jwa.EC()
	}
	return false
}

// setSource finds keys in a fixed set.
func setSource(set jwk.Set) keySource {
	return func(_ context.Context, kid string) ([]jwk.Key, error) {
		return keysIn(set, kid), nil
	}
}

func keysIn(set jwk.Set, kid string) []jwk.Key {
	var out []jwk.Key
	for i := range set.Len() {
		key, _ := set.Key(i)
		if k, _ := key.KeyID(); kid == "" || k == kid {
			out = append(out, key)
		}
	}
	return out
}

// remoteKeys are the JWK Sets at URLs (OIDC providers', clients' jwks_url), fetched and kept
// fresh by jwx's cache, and fetched again at once when a token names a key the cached set
// lacks: the owner has rotated its keys.
type remoteKeys struct {
	cache *jwk.Cache
	now   func() time.Time

	mu        sync.Mutex
	refreshed map[string]time.Time // when a URL was last fetched because of an unknown kid
}

// registerTimeout bounds the first fetch of a set, which a request waits for.
const registerTimeout = 10 * time.Second

func newRemoteKeys(cache *jwk.Cache, now func() time.Time) *remoteKeys {
	return &remoteKeys{cache: cache, now: now, refreshed: map[string]time.Time{}}
}

func (r *remoteKeys) source(url string) keySource {
	return func(ctx context.Context, kid string) ([]jwk.Key, error) {
		set, err := r.set(ctx, url)
		if err != nil {
			return nil, err
		}
		if keys := keysIn(set, kid); len(keys) > 0 || kid == "" || !r.mayRefresh(url) {
			return keys, nil
		}
		if set, err = r.cache.Refresh(ctx, url); err != nil {
			return nil, fmt.Errorf("fetching the keys at %s: %w", url, err)
		}
		return keysIn(set, kid), nil
	}
}

// set returns the cached set at url, registering the URL with the cache on first use.
func (r *remoteKeys) set(ctx context.Context, url string) (jwk.Set, error) {
	if !r.cache.IsRegistered(ctx, url) {
		rctx, cancel := context.WithTimeout(ctx, registerTimeout)
		err := r.cache.Register(rctx, url)
		cancel()
		if err != nil && !errors.Is(err, httprc.ErrResourceAlreadyExists()) {
			return nil, fmt.Errorf("fetching the keys at %s: %w", url, err)
		}
	}
	set, err := r.cache.Lookup(ctx, url)
	if err == nil {
		return set, nil
	}
	// Registered, but no fetch has succeeded yet.
	if !r.mayRefresh(url) {
		return nil, fmt.Errorf("the keys at %s could not be fetched: %w", url, err)
	}
	if set, err = r.cache.Refresh(ctx, url); err != nil {
		return nil, fmt.Errorf("fetching the keys at %s: %w", url, err)
	}
	return set, nil
}

// mayRefresh allows one forced fetch of a URL per missReload, so tokens naming made-up keys
// cannot turn into a flood of requests to the key's owner.
func (r *remoteKeys) mayRefresh(url string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.refreshed[url]) < missReload {
		return false
	}
	r.refreshed[url] = now
	return true
}
