package auth

import (
	"testing"
	"time"
)

func TestTokenCacheForgetsExpiredTokensAndStaysBounded(t *testing.T) {
	c := newTokenCache()
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	c.put("a", verifiedToken{subject: "x", expires: now.Add(time.Minute)}, now)
	if v, ok := c.get("a", now.Add(59*time.Second)); !ok || v.subject != "x" {
		t.Fatalf("a live token was not found: %v %v", v, ok)
	}
	if _, ok := c.get("a", now.Add(time.Minute)); ok {
		t.Fatal("an expired token was found")
	}
	c.put("no-exp", verifiedToken{subject: "y"}, now)
	if _, ok := c.get("no-exp", now); ok {
		t.Fatal("a token without an expiry was cached")
	}
	for i := range maxCachedTokens + 10 {
		c.put(time.Duration(i).String(), verifiedToken{expires: now.Add(time.Hour)}, now)
	}
	if n := len(c.tokens); n > maxCachedTokens {
		t.Fatalf("%d tokens cached, bound %d", n, maxCachedTokens)
	}
}
