// Package browsertest runs tests in a real headless Chromium (Debian's chromium package,
// installed by `make chromium`, which `make test` depends on) through chromedp. Without it a
// test is skipped, except under CI=true, where it fails: CI must not pass having checked
// nothing.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// candidates are where Chromium is looked for, Debian's first.
var candidates = []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}

// Path finds Chromium: CARTREG_CHROMIUM if set, else the usual places, else PATH.
func Path() string {
	if p := os.Getenv("CARTREG_CHROMIUM"); p != "" {
		return p
	}
	for _, p := range candidates {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

// New starts a headless Chromium with a fresh profile for the test, sized as a tablet in
// landscape, and returns a context to run chromedp actions in; it is closed when the test
// ends.
func New(t testing.TB) context.Context {
	t.Helper()
	path := Path()
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Chromium not found (run `make chromium`); CI must run the browser tests")
		}
		t.Skip("Chromium not found: `make chromium` installs it (apt-get install chromium)")
	}
	// These flags work as root in a container: no sandbox (it needs user namespaces), and
	// nothing that reaches out to Google's services.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(1024, 768),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting Chromium (%s): %v", path, err)
	}
	return ctx
}

// Screenshot saves the whole page as dir/name.png and logs where. With
// CARTREG_TEST_SCREENSHOTS set to a folder, they are kept there instead, named by test, for
// a person to look at after the run.
func Screenshot(t testing.TB, ctx context.Context, dir, name string) {
	t.Helper()
	if keep := os.Getenv("CARTREG_TEST_SCREENSHOTS"); keep != "" {
		dir = filepath.Join(keep, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	file := filepath.Join(dir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
}
