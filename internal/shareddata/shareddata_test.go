package shareddata

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// recorder is a TB that notes how the test would have ended.
type recorder struct{ skipped, failed string }

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

func TestDirIsBesideTheModuleRoot(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(wd)) // internal/shareddata
	if got, want := Dir(), filepath.Join(filepath.Dir(root), "shared"); got != want {
		t.Fatalf("Dir() = %q, want %q", got, want)
	}
	if got, want := Path("synthea/hiv-bundles"), filepath.Join(Dir(), "synthea", "hiv-bundles"); got != want {
		t.Fatalf("Path = %q, want %q", got, want)
	}
}

func TestMissingSkipsOutsideCIAndFailsUnderIt(t *testing.T) {
	for _, c := range []struct {
		ci       string
		wantSkip bool
	}{{"", true}, {"false", true}, {"true", false}} {
		t.Run("CI="+c.ci, func(t *testing.T) {
			t.Setenv("CI", c.ci)
			var r recorder
			if files := Glob(&r, "no-such-folder/*.json"); files != nil {
				t.Fatalf("Glob of nothing returned %v", files)
			}
			if c.wantSkip && (r.skipped == "" || r.failed != "") {
				t.Fatalf("want a skip only: skipped %q, failed %q", r.skipped, r.failed)
			}
			if !c.wantSkip && (r.failed == "" || r.skipped != "") {
				t.Fatalf("want a failure only: skipped %q, failed %q", r.skipped, r.failed)
			}

			r = recorder{}
			File(&r, "no-such-file.json")
			if (r.skipped != "") != c.wantSkip || (r.failed != "") == c.wantSkip {
				t.Fatalf("File: skipped %q, failed %q", r.skipped, r.failed)
			}
		})
	}
}

func TestGlobAndFileFindWhatExists(t *testing.T) {
	files := Glob(t, "*") // skips without the folder, fails under CI
	entries, err := os.ReadDir(Dir())
	if err != nil || len(files) != len(entries) {
		t.Fatalf("Glob(*) = %d files, the folder has %d (%v)", len(files), len(entries), err)
	}
	var r recorder
	name := entries[0].Name()
	if got := File(&r, name); got != filepath.Join(Dir(), name) || r.skipped != "" || r.failed != "" {
		t.Fatalf("File(%q) = %q (skipped %q, failed %q)", name, got, r.skipped, r.failed)
	}
}
