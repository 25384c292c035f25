package outbox

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToTheCapWithJitterInTheUpperHalf(t *testing.T) {
	const initial, limit = 30 * time.Second, time.Hour
	for _, tc := range []struct {
		n        int
		low, top time.Duration // jitter 0 and jitter → 1
	}{
		{1, 15 * time.Second, 30 * time.Second},
		{2, 30 * time.Second, time.Minute},
		{4, 2 * time.Minute, 4 * time.Minute},
		{8, 30 * time.Minute, time.Hour}, // 64 min, capped
		{9, 30 * time.Minute, time.Hour},
		{1 << 20, 30 * time.Minute, time.Hour}, // no overflow
	} {
		if got := backoff(tc.n, initial, limit, 0); got != tc.low {
			t.Errorf("backoff(%d, jitter 0) = %s, want %s", tc.n, got, tc.low)
		}
		if got := backoff(tc.n, initial, limit, 0.999999); got > tc.top || got < tc.top-time.Second/10 {
			t.Errorf("backoff(%d, jitter ~1) = %s, want just under %s", tc.n, got, tc.top)
		}
	}
}

func TestAttachmentName(t *testing.T) {
	for mediaType, want := range map[string]string{
		"application/fhir+json":    "digest.json",
		"application/fhir+xml":     "digest.xml",
		"application/json":         "digest.json",
		"application/x-no-such-ty": "digest.bin",
	} {
		if got := attachmentName("digest", mediaType); got != want {
			t.Errorf("attachmentName(digest, %s) = %q, want %q", mediaType, got, want)
		}
	}
	if got := attachmentName("../weekly digest", "application/json"); got != "---weekly-digest.json" {
		t.Errorf("attachmentName of an unsafe kind = %q", got)
	}
}
