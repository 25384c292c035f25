package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseServe parses args for the serve command, with the environment the test has set.
func parseServe(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	cmd, cfg := newServeCommand(io.Discard)
	cmd.FlagSet.SetOutput(io.Discard)
	if err := cmd.Parse(args); err != nil {
		return nil, err
	}
	return cfg, cfg.resolveDatabase()
}

// clearCartregEnv empties every CARTREG_ variable for the test. It changes the process's
// environment, which the binary-running tests pass on to their children: so the tests that
// call it are not parallel, and the parallel ones run only after they have finished.
func clearCartregEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CARTREG_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	clearCartregEnv(t)
	cfg, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	dataDir, _ := defaultDataDir()
	if cfg.HTTP.Addr != "127.0.0.1:8080" || cfg.DataDir != dataDir || !filepath.IsAbs(dataDir) || cfg.DatabaseURL != "" || !cfg.Migrate ||
		cfg.LogLevel != "info" || cfg.HTTP.ShutdownTimeout != 30*time.Second {
		t.Fatalf("defaults = %+v", cfg)
	}
	if err := cfg.HTTP.Validate(); err != nil {
		t.Fatalf("default HTTP settings invalid: %v", err)
	}
}

func TestConfigFromEnvironmentFlagsAndFile(t *testing.T) {
	clearCartregEnv(t)
	t.Setenv("CARTREG_ADDR", "127.0.0.1:9090")
	t.Setenv("CARTREG_DATABASE_URL", "postgres://u:p@db.example:5433/reg")
	t.Setenv("CARTREG_DATA_DIR", "/srv/cartreg")
	t.Setenv("CARTREG_LOG_LEVEL", "debug")
	t.Setenv("CARTREG_MIGRATE", "false")
	t.Setenv("CARTREG_SHUTDOWN_TIMEOUT", "5s")
	file := filepath.Join(t.TempDir(), "cartreg.conf")
	if err := os.WriteFile(file, []byte("log-format json\nmax-body-size 8M\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg, err := parseServe(t, "-log-level", "warn", "-config", file)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"addr (env)":          {cfg.HTTP.Addr, "127.0.0.1:9090"},
		"database url (env)":  {cfg.DatabaseURL, "postgres://u:p@db.example:5433/reg"},
		"data dir (env)":      {cfg.DataDir, "/srv/cartreg"},
		"log level (flag)":    {cfg.LogLevel, "warn"},
		"log format (file)":   {cfg.LogFormat, "json"},
		"max body (file)":     {cfg.HTTP.MaxBodySize, "8M"},
		"shutdown (env)":      {cfg.HTTP.ShutdownTimeout.String(), "5s"},
		"migrate=false (env)": {strings.ToLower(boolString(cfg.Migrate)), "false"},
	}
	for name, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s = %q, want %q", name, v[0], v[1])
		}
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestDatabaseURLFromAFile(t *testing.T) {
	clearCartregEnv(t)
	file := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(file, []byte("postgres://reg:s3cret@db:5432/reg\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseServe(t, "-database-url-file", file)
	if err != nil || cfg.DatabaseURL != "postgres://reg:s3cret@db:5432/reg" {
		t.Fatalf("url = %q, %v", cfg.DatabaseURL, err)
	}
	if _, err := parseServe(t, "-database-url-file", file, "-database-url", "postgres://x@y/z"); err == nil {
		t.Fatal("both a URL and a URL file were accepted")
	}
}

func TestInvalidSettingsAreRejected(t *testing.T) {
	clearCartregEnv(t)
	if _, err := parseServe(t, "-database-url", "mysql://nope"); err == nil {
		t.Error("a URL pgx cannot use was accepted")
	}
	if _, err := parseServe(t, "-shutdown-timeout", "soon"); err == nil {
		t.Error("a malformed duration was accepted")
	}
	cfg, err := parseServe(t, "-log-level", "chatty")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.newLogger(io.Discard); err == nil || !strings.Contains(err.Error(), "-log-level") {
		t.Errorf("log level chatty: %v", err)
	}
	cfg.LogLevel, cfg.LogFormat = "info", "xml"
	if _, err := cfg.newLogger(io.Discard); err == nil {
		t.Error("log format xml was accepted")
	}
}

// Rest-hook endpoints come from -subscription-endpoints or its variable, are off by default,
// and a malformed entry stops the start.
func TestSubscriptionEndpointsSetting(t *testing.T) {
	clearCartregEnv(t)
	cfg, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.loadRegistry(); err != nil {
		t.Fatal(err)
	}
	if !cfg.appConfig().Subscriptions.Endpoints.Empty() {
		t.Errorf("rest-hook endpoints allowed by default: %v", cfg.subscriptionEndpoints)
	}
	t.Setenv("CARTREG_SUBSCRIPTION_ENDPOINTS", "https://hooks.example.org/cartreg/, 10.1.0.0/16")
	if cfg, err = parseServe(t); err != nil {
		t.Fatal(err)
	}
	if err := cfg.loadRegistry(); err != nil {
		t.Fatal(err)
	}
	allow := cfg.appConfig().Subscriptions.Endpoints
	if !allow.Allows("https://hooks.example.org/cartreg/x") || !allow.Allows("http://10.1.2.3/") || allow.Allows("https://hooks.example.org/") {
		t.Errorf("allow-list from the environment: %v", allow)
	}
	if cfg, err = parseServe(t, "-subscription-endpoints", "https://u:p@hooks.example.org/"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.loadRegistry(); err == nil || !strings.Contains(err.Error(), "-subscription-endpoints") {
		t.Errorf("a malformed entry: %v", err)
	}
}

func TestSearchLimitSettings(t *testing.T) {
	clearCartregEnv(t)
	t.Setenv("CARTREG_SEARCH_MAX_CHAIN_DEPTH", "2")
	cfg, err := parseServe(t, "-search-timeout", "3s", "-bundle-timeout", "2m")
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.FHIR.Search; l.Timeout != 3*time.Second || l.MaxChainDepth != 2 || l.MaxSortKeys != 5 || cfg.FHIR.BundleTimeout != 2*time.Minute {
		t.Errorf("limits %+v, bundle timeout %s", l, cfg.FHIR.BundleTimeout)
	}
	if err := cfg.validateFHIR(); err != nil {
		t.Errorf("valid limits refused: %v", err)
	}
	cfg.FHIR.Search.MaxIncluded = 0 // an operator may read 0 as "no limit": refused, not guessed
	if err := cfg.validateFHIR(); err == nil || !strings.Contains(err.Error(), "-search-max-included") {
		t.Errorf("a zero limit: %v", err)
	}
}

// -follow-up-plan takes a preset's name as well as a file; an unknown name is neither.
func TestFollowUpPlanPreset(t *testing.T) {
	clearCartregEnv(t)
	cfg, err := parseServe(t, "-follow-up-plan", "cibmtr")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if m := cfg.Registry.Plan.Milestones; len(m) != 17 || m[0].Code != "d100" || m[16].Code != "y15" {
		t.Errorf("cibmtr plan: %+v", m)
	}
	cfg, err = parseServe(t, "-follow-up-plan", "cibmtr-2031")
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil {
		t.Error("an unknown plan name was accepted")
	}
}

func TestExportSettings(t *testing.T) {
	clearCartregEnv(t)
	t.Setenv("CARTREG_EXPORT_MAX_JOBS", "2")
	cfg, err := parseServe(t, "-data-dir", "/srv/cartreg", "-export-retention", "48h")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validateExport(); err != nil {
		t.Fatal(err)
	}
	if e := cfg.appConfig().Export; e.Dir != "/srv/cartreg/export" || e.Retention != 48*time.Hour || e.MaxJobs != 2 || e.PageSize != 1000 {
		t.Errorf("export settings %+v", e)
	}
	// With a database URL and no data dir, the files still go to the per-user data dir, never
	// to a folder relative to wherever the server happens to start.
	t.Setenv("XDG_DATA_HOME", "/home/someone/.data")
	cfg, err = parseServe(t, "-database-url", "postgres://db.example/cartreg")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if e := cfg.appConfig().Export; e.Dir != "/home/someone/.data/cartreg/export" {
		t.Errorf("export folder with a database URL: %q", e.Dir)
	}
	cfg, err = parseServe(t, "-database-url", "postgres://db.example/cartreg", "-export-dir", "exports")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if e := cfg.appConfig().Export; !filepath.IsAbs(e.Dir) {
		t.Errorf("a relative -export-dir is left relative: %q", e.Dir)
	}
	cfg, err = parseServe(t, "-export-page-size", "0")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validateExport(); err == nil || !strings.Contains(err.Error(), "-export-page-size") {
		t.Errorf("a zero page size: %v", err)
	}
}
