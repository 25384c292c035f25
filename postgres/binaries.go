package postgres

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrNoServerBinaries means no PostgreSQL server (initdb and postgres) could be found.
var ErrNoServerBinaries = errors.New("no PostgreSQL server binaries found (initdb, postgres): " +
	"install them (Debian/Ubuntu: apt-get install -y postgresql) or set CARTREG_PG_BIN_DIR")

// debianBinGlob is where Debian and Ubuntu install each major version's server binaries;
// they are not on PATH there, only the client wrappers are.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// Binaries locates the server programs of one PostgreSQL installation.
type Binaries struct {
	Dir   string // directory holding initdb and postgres
	Major int    // major version, e.g. 15
}

func (b Binaries) path(program string) string { return filepath.Join(b.Dir, program) }

// FindBinaries looks for initdb and postgres in dir if it is given, else on PATH, else in the
// newest /usr/lib/postgresql/*/bin.
func FindBinaries(dir string) (Binaries, error) {
	var candidates []string
	if dir != "" {
		candidates = []string{dir}
	} else {
		if initdb, err := exec.LookPath("initdb"); err == nil {
			// A link on PATH (Debian's wrappers, a hand-made symlink) stands for one program;
			// its target's directory holds the installation's others, pg_basebackup among them.
			if target, err := filepath.EvalSymlinks(initdb); err == nil {
				initdb = target
			}
			candidates = append(candidates, filepath.Dir(initdb))
		}
		debian, _ := filepath.Glob(debianBinGlob)
		sort.Slice(debian, func(i, j int) bool { return majorFromPath(debian[i]) > majorFromPath(debian[j]) })
		candidates = append(candidates, debian...)
	}
	for _, c := range candidates {
		if !isExecutable(filepath.Join(c, "initdb")) || !isExecutable(filepath.Join(c, "postgres")) {
			continue
		}
		major, err := serverMajorVersion(filepath.Join(c, "postgres"))
		if err != nil {
			return Binaries{}, err
		}
		return Binaries{Dir: c, Major: major}, nil
	}
	if dir != "" {
		return Binaries{}, fmt.Errorf("%w (looked in %s)", ErrNoServerBinaries, dir)
	}
	return Binaries{}, ErrNoServerBinaries
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir() && info.Mode()&0o111 != 0
}

func majorFromPath(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

var versionPattern = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// serverMajorVersion asks the postgres program itself, since a binary on PATH says nothing
// about its version in its location.
func serverMajorVersion(postgres string) (int, error) {
	out, err := exec.Command(postgres, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("asking %s for its version: %w", postgres, err)
	}
	m := versionPattern.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unexpected version output from %s: %q", postgres, strings.TrimSpace(string(out)))
	}
	return strconv.Atoi(string(m[1]))
}
