package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// synth writes one Bundle per patient, and the same command gives the same files.
func TestSynthWritesTheSameCohortTwice(t *testing.T) {
	t.Parallel()
	dirs := []string{t.TempDir(), t.TempDir()}
	day := time.Now().UTC().Format(time.DateOnly) // the default cut-off
	for _, dir := range dirs {
		out, err := runCartreg(t, nil, "synth", "--patients", "20", "--seed", "7", "--out", dir)
		if err != nil || !strings.Contains(out, "wrote 20 patients") {
			t.Fatalf("synth: %v\n%s", err, out)
		}
	}
	if time.Now().UTC().Format(time.DateOnly) != day {
		t.Skip("the date changed between the two runs, and with it the default cut-off")
	}
	files, err := filepath.Glob(filepath.Join(dirs[0], "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 20 || filepath.Base(files[0]) != "patient-000001.json" || filepath.Base(files[19]) != "patient-000020.json" {
		t.Fatalf("synth wrote %d files: %v", len(files), files)
	}
	for _, f := range files {
		a, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dirs[1], filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) || !bytes.Contains(a, []byte(`"type": "transaction"`)) {
			t.Fatalf("%s: the two runs differ, or it is not a transaction Bundle", filepath.Base(f))
		}
	}

	if out, err := runCartreg(t, nil, "synth", "--patients", "3"); err == nil || !strings.Contains(out, "-out") {
		t.Errorf("synth without -out: %v\n%s", err, out)
	}
	if out, err := runCartreg(t, nil, "synth", "--out", t.TempDir(), "--as-of", "22/11/2026"); err == nil || !strings.Contains(out, "YYYY-MM-DD") {
		t.Errorf("synth with a malformed -as-of: %v\n%s", err, out)
	}
}
