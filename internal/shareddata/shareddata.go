// Package shareddata finds the data sets that tests read from the shared folder beside the
// repository (../shared from its root: the FHIR R4 examples and search parameters, the
// Synthea exports), which are too large to carry in it.
//
// Where the folder is absent the tests that need it are skipped, so a developer without it can
// still run the rest; under CI (CI=true) they fail instead, because a CI run that skipped them
// would pass having checked nothing. Every test that reads the folder decides through Missing,
// so that rule holds everywhere.
package shareddata

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// TB is the part of testing.TB that Missing needs; *testing.T and *testing.B satisfy it.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Dir returns the shared folder's absolute path: ../shared from the directory holding the
// module's go.mod, found upwards from the working directory (a test's is its package's).
// It returns "" when no go.mod is found.
func Dir() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(dir), "shared")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Path returns the absolute path of rel, a slash-separated path inside the shared folder,
// whether or not it exists.
func Path(rel string) string {
	return filepath.Join(Dir(), filepath.FromSlash(rel))
}

// Glob returns the files inside the shared folder that match pattern (slash-separated,
// relative to the folder), sorted; when none do, it ends the test through Missing.
func Glob(t TB, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(Path(pattern))
	if err != nil || len(files) == 0 {
		Missing(t, pattern)
		return nil // only reached with a TB whose Skipf and Fatalf return
	}
	sort.Strings(files)
	return files
}

// File returns the absolute path of rel inside the shared folder; when it does not exist, it
// ends the test through Missing.
func File(t TB, rel string) string {
	t.Helper()
	path := Path(rel)
	if _, err := os.Stat(path); err != nil {
		Missing(t, rel)
	}
	return path
}

// ReadGzip returns the decompressed content of a gzipped file (a Synthea export's Bundles are
// stored so); a file that cannot be read ends the test.
func ReadGzip(t TB, path string) []byte {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v", err)
		return nil
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
		return nil
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
		return nil
	}
	return raw
}

// Missing ends the test for want of what (a path or pattern inside the shared folder): a skip,
// or a failure when the CI environment variable is "true".
func Missing(t TB, what string) {
	t.Helper()
	msg := "no %s in the shared folder %s (beside the repository, see its README)"
	if os.Getenv("CI") == "true" {
		t.Fatalf(msg+": CI must have it", what, Dir())
		return
	}
	t.Skipf(msg+": skipping", what, Dir())
}
