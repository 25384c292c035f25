// Package jsclient runs the JavaScript FHIR clients that hospitals and app developers use
// (fhir-kit-client, @medplum/core) against a test's server, so conformance is checked by
// the clients themselves rather than by our reading of the specification.
//
// The packages are pinned by package.json and package-lock.json beside this file and
// installed with `npm ci` into a cache folder outside the repository the first time a test
// asks, the way postgres/pgtest finds PostgreSQL: a fresh machine needs only Node.js and the
// npm registry. Where Node.js is missing the tests are skipped, except under CI (CI=true),
// where a skip would pass having checked nothing.
package jsclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

//go:embed package.json
var packageJSON []byte

//go:embed package-lock.json
var packageLock []byte

// Dir installs the pinned packages when they are not installed yet and returns the folder
// holding node_modules. Concurrent test binaries may call it at once: each installs into a
// folder of its own and renames it into place, and the loser of that race uses the winner's.
func Dir(t testing.TB) string {
	t.Helper()
	_, npm := tools(t)
	sum := sha256.Sum256(append(append([]byte{}, packageJSON...), packageLock...))
	cache := os.Getenv("CARTREG_JS_CACHE")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cache = filepath.Join(base, "cartreg", "jsclient")
	}
	dir := filepath.Join(cache, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil {
		return dir
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatalf("jsclient: %v", err)
	}
	staging, err := os.MkdirTemp(cache, "install-")
	if err != nil {
		t.Fatalf("jsclient: %v", err)
	}
	defer os.RemoveAll(staging)
	for name, data := range map[string][]byte{"package.json": packageJSON, "package-lock.json": packageLock} {
		if err := os.WriteFile(filepath.Join(staging, name), data, 0o644); err != nil {
			t.Fatalf("jsclient: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = staging
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("jsclient: npm ci: %v\n%s", err, out)
	}
	if err := os.Rename(staging, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules")); statErr != nil {
			t.Fatalf("jsclient: %v", err)
		}
	}
	return dir
}

// Run runs script, an ES module, with Node.js from the folder Dir installed into, so its
// imports of the pinned packages resolve. env is added to the script's environment (the
// server's URL and a token, typically). It returns what the script printed on standard
// output, and fails the test with standard error when the script exits non-zero.
func Run(t testing.TB, script string, env map[string]string) []byte {
	t.Helper()
	dir := Dir(t)
	node, _ := tools(t)
	file, err := os.CreateTemp(dir, "test-*.mjs")
	if err != nil {
		t.Fatalf("jsclient: %v", err)
	}
	defer os.Remove(file.Name())
	if _, err := file.WriteString(script); err != nil {
		t.Fatalf("jsclient: %v", err)
	}
	file.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, file.Name())
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("jsclient: node %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(file.Name()), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// tools finds node and npm, skipping the test where they are missing outside CI.
func tools(t testing.TB) (node, npm string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		msg := fmt.Sprintf("jsclient: Node.js and npm are needed to run the FHIR client libraries (node: %v, npm: %v)", errNode, errNpm)
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, npm
}
