// Package pgtest gives tests a real PostgreSQL database of their own.
//
// By default a test binary starts one throwaway cluster in a temporary directory (with
// durability switched off, as nothing in it outlives the run) and stops it when the tests end;
// with CARTREG_TEST_DATABASE_URL set it uses that server instead. Either way each test gets
// its own database, cloned from a template that was migrated once, and dropped afterwards, so
// tests can commit freely and run in parallel.
//
// A package that uses it must run its tests through Main:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/postgres"
)

// EnvURL names an existing server to test against, as a postgres:// URL whose user may
// create databases. Its database is used only to create and drop the test databases.
const EnvURL = "CARTREG_TEST_DATABASE_URL"

var (
	inMain bool

	serverOnce sync.Once
	serverErr  error
	adminURL   string
	admin      *pgxpool.Pool
	cluster    *postgres.Cluster
	clusterDir string

	templateOnce sync.Once
	templateErr  error
	templateName string
)

// Main runs the package's tests, then stops the throwaway cluster if one was started, and
// exits.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that has more to clean up: it returns the exit code.
func Run(m *testing.M) int {
	inMain = true
	code := m.Run()
	if admin != nil {
		admin.Close()
	}
	stopStandby() // before its primary, which it would otherwise keep asking for WAL
	if cluster != nil {
		if err := cluster.Stop(30 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stopping the test cluster:", err)
		}
		os.RemoveAll(clusterDir)
	}
	return code
}

// NewDatabase returns a pool on a new, fully migrated database of the test's own.
func NewDatabase(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), NewDatabaseURL(t))
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the database is dropped: cleanups run last-in first-out
	return pool
}

// NewDatabaseURL creates a new, fully migrated database and returns its URL, for tests that
// hand a database to another process.
func NewDatabaseURL(t testing.TB) string {
	t.Helper()
	startServer(t)
	templateOnce.Do(func() { templateName, templateErr = buildTemplate() })
	if templateErr != nil {
		t.Fatalf("pgtest: building the migrated template database: %v", templateErr)
	}
	return createDatabase(t, templateName)
}

// NewEmptyDatabaseURL creates a new database with no schema at all and returns its URL.
func NewEmptyDatabaseURL(t testing.TB) string {
	t.Helper()
	startServer(t)
	return createDatabase(t, "")
}

func startServer(t testing.TB) {
	t.Helper()
	if !inMain {
		t.Fatal("pgtest: add `func TestMain(m *testing.M) { pgtest.Main(m) }` to this package's tests")
	}
	serverOnce.Do(func() { serverErr = connectAdmin() })
	if serverErr != nil {
		t.Fatalf("pgtest: %v", serverErr)
	}
}

func connectAdmin() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adminURL = os.Getenv(EnvURL)
	if adminURL == "" {
		if err := startCluster(ctx); err != nil {
			return err
		}
		adminURL = cluster.URL("postgres")
	} else if _, err := withDatabase(adminURL, "x"); err != nil {
		return fmt.Errorf("%s must be a postgres:// URL: %w", EnvURL, err)
	}
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		return fmt.Errorf("parsing the server URL: %w", err)
	}
	cfg.MaxConns = 4
	if admin, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return fmt.Errorf("connecting to the test server: %w", err)
	}
	return admin.Ping(ctx)
}

func startCluster(ctx context.Context) error {
	bins, err := postgres.FindBinaries(os.Getenv("CARTREG_PG_BIN_DIR"))
	if err != nil {
		return fmt.Errorf("starting a throwaway cluster: %w (or set %s)", err, EnvURL)
	}
	if clusterDir, err = os.MkdirTemp("", "cartreg-test-"); err != nil {
		return err
	}
	// The postgres user (when tests run as root) must be able to enter it.
	if err := os.Chmod(clusterDir, 0o755); err != nil {
		return err
	}
	cluster = &postgres.Cluster{
		Dir:      clusterDir,
		Binaries: bins,
		RunAs:    pgUser(),
		// Nothing here has to survive a crash, so skip the flushes that make durability cost.
		Settings: map[string]string{
			"fsync":              "off",
			"synchronous_commit": "off",
			"full_page_writes":   "off",
			"max_connections":    "300",
		},
	}
	if err := cluster.Start(ctx); err != nil {
		os.RemoveAll(clusterDir)
		cluster = nil
		return fmt.Errorf("starting a throwaway cluster: %w", err)
	}
	return nil
}

// pgUser is who runs the cluster when the tests run as root; as for the server,
// CARTREG_PG_USER overrides it.
func pgUser() string {
	if u := os.Getenv("CARTREG_PG_USER"); u != "" {
		return u
	}
	return "postgres"
}

// buildTemplate migrates a template database once per schema. Its name carries a digest of
// the migrations, so a changed schema gets a new template; an advisory lock keeps test
// binaries that share a server (CARTREG_TEST_DATABASE_URL) from building it twice.
func buildTemplate() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	digest, err := migrationsDigest()
	if err != nil {
		return "", err
	}
	name := "cartreg_template_" + digest[:16]

	conn, err := admin.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('cartreg pgtest template'))"); err != nil {
		return "", err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext('cartreg pgtest template'))")

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		return name, err
	}
	// Build under a scratch name and rename at the end: a run that dies half-way leaves
	// nothing that looks finished.
	scratch := name + "_wip"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{scratch}.Sanitize()+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{scratch}.Sanitize()); err != nil {
		return "", err
	}
	scratchURL, err := withDatabase(adminURL, scratch)
	if err != nil {
		return "", err
	}
	target, err := pgx.Connect(ctx, scratchURL)
	if err != nil {
		return "", err
	}
	_, err = migrations.Up(ctx, target, slog.New(slog.NewTextHandler(io.Discard, nil)))
	target.Close(ctx)
	if err != nil {
		return "", err
	}
	_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{scratch}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize())
	return name, err
}

func migrationsDigest() (string, error) {
	names, err := migrations.Names()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(migrations.Files, n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func createDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := "cartreg_test_" + hex.EncodeToString(suffix)
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		_, err = admin.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		// object_in_use: the template is briefly in use by another clone
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	dbURL, err := withDatabase(adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return dbURL
}

// withDatabase returns serverURL with its database replaced by name.
func withDatabase(serverURL, name string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", err
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("not a postgres:// URL: %q", serverURL)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// ReachableDir is a fresh temporary directory, removed after the test, that the postgres
// user can enter when tests run as root: the data directory of an embedded cluster that a
// test starts through cartreg itself (the binary's tests, the benchmark harness's).
func ReachableDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
