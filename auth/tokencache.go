package auth

import (
	"sync"
	"time"
)

// verifiedToken is what a checked access token of this server says.
type verifiedToken struct {
	subject string
	role    Role
	sites   []string
	scopes  Scopes
	expires time.Time
}

// maxCachedTokens bounds the cache; past it, expired tokens are dropped, then all.
const maxCachedTokens = 10_000

// tokenCache holds verified tokens until they expire. A token is its own key: whoever holds it
// may use it anyway, and a lookup by the exact string cannot confuse two tokens. Revocation is
// unaffected: the client's status is checked on every request, hit or miss.
type tokenCache struct {
	mu     sync.Mutex
	tokens map[string]verifiedToken
}

func newTokenCache() *tokenCache { return &tokenCache{tokens: map[string]verifiedToken{}} }

func (c *tokenCache) get(raw string, now time.Time) (verifiedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.tokens[raw]
	if ok && !now.Before(v.expires) {
		delete(c.tokens, raw)
		return verifiedToken{}, false
	}
	return v, ok
}

func (c *tokenCache) put(raw string, v verifiedToken, now time.Time) {
	if v.expires.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tokens) >= maxCachedTokens {
		for k, t := range c.tokens {
			if !now.Before(t.expires) {
				delete(c.tokens, k)
			}
		}
		if len(c.tokens) >= maxCachedTokens {
			clear(c.tokens)
		}
	}
	c.tokens[raw] = v
}
