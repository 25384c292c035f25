package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/cartreg/cartreg/"

// The README's layout table lists the packages top to bottom so that each imports only
// packages below it: the architecture as the code has it, not as a diagram once drew it.
// (Tests may import upwards: a package's tests run it wired, through app/apptest.)
func TestLayoutTableIsTheImportOrder(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	section = section[strings.Index(section, "## Layout"):]
	section = section[:strings.Index(section[3:], "\n## ")+3]
	rank := map[string]int{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)`").FindAllStringSubmatch(section, -1) {
		rank[strings.TrimSuffix(m[1], "/")] = len(rank)
	}
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if strings.HasSuffix(pkg, "/gen") || strings.Contains(pkg, "testdata") {
			continue // generators run by hand
		}
		r, ok := rank[pkg]
		if !ok {
			t.Errorf("%s is not in the README's layout table", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if d, ok := rank[dep]; ok && d <= r {
				t.Errorf("%s imports %s, which the layout table lists above it", pkg, dep)
			}
		}
	}
}
