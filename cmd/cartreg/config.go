package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peterbourgon/ff/v3"

	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/bulk"
	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/server"
	"github.com/cartreg/cartreg/web"
)

// envPrefix: every flag can also be set as CARTREG_<FLAG_NAME>, e.g. -database-url as
// CARTREG_DATABASE_URL.
const envPrefix = "CARTREG"

// Config is everything cartreg can be told, from flags, CARTREG_* environment variables or a
// config file (-config, "name value" lines), in that order of precedence.
type Config struct {
	DatabaseURL     string
	DatabaseURLFile string
	DatabaseReadURL string
	DBMaxConns      int
	DataDir         string
	PGBinDir        string
	PGUser          string
	Migrate         bool
	LogLevel        string
	LogFormat       string
	HTTP            server.Config
	FHIR            fhir.APIConfig
	Registry        registry.Config
	FollowUpPlan    string // a JSON file with the follow-up plan, instead of the default one
	FollowUp        FollowUpConfig
	Identity        IdentityConfig
	Web             web.Config
	WebOIDC         WebOIDCConfig
	// SubscriptionEndpoints is the comma-separated allow-list of rest-hook endpoints, read
	// into subscriptionEndpoints by Validate.
	SubscriptionEndpoints string
	subscriptionEndpoints *outbox.AllowList
	auth                  auth.Config // from Identity and the base URL, by Validate
	// Export is how Bulk Data $export runs; an empty Dir is the data dir's export/ folder.
	Export bulk.Config
	// DebugAddr, when set, serves Go's profiler (net/http/pprof) on a listener of its own,
	// never on the public one: profiles show request data.
	DebugAddr string
	// shareEmbedded marks a short-lived command (demo, import, schedule run, client, ...): it
	// uses the embedded database as a client when a running server owns it, instead of
	// failing, and creates none unless told to (Init).
	shareEmbedded bool
	// Init lets a short-lived command create the embedded database when there is none at the
	// data dir. Without it such a command refuses: a data dir resolved differently from the
	// server's would otherwise get a second, empty cluster and the command's writes would go
	// there, unseen by the server.
	Init bool
	// dataDirDefaulted is true when no -data-dir was given and DataDir is the per-user default.
	dataDirDefaulted bool
}

func defaultConfig() Config {
	return Config{
		DataDir:   "", // defaultDataDir, resolved by Validate
		PGUser:    "postgres",
		Migrate:   true,
		LogLevel:  "info",
		LogFormat: "auto",
		HTTP: server.Config{
			Addr:              "127.0.0.1:8080",
			MaxBodySize:       "64M",
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       5 * time.Minute,
			WriteTimeout:      5 * time.Minute,
			IdleTimeout:       2 * time.Minute,
			ShutdownTimeout:   30 * time.Second,
		},
		Export: bulk.Config{Retention: bulk.DefaultRetention, PageSize: bulk.DefaultPageSize, MaxJobs: bulk.DefaultMaxJobs},
		FHIR: fhir.APIConfig{DefaultCount: 20, MaxCount: 1000,
			Bundles:       fhir.BundleConfig{MaxEntries: 10000, ReferentialIntegrity: true},
			BundleTimeout: fhir.DefaultBundleTimeout, Search: fhir.DefaultSearchLimits,
			Limits: fhir.ResourceLimits{MaxPatchOperations: fhir.DefaultMaxPatchOperations,
				MaxPatchedSize: fhir.DefaultMaxPatchedSize, MaxArrayLength: fhir.DefaultMaxArrayLength}},
		Registry: registry.Config{FollowUpYears: 5, MinCell: 5, RoundTo: 5, OverlapWindow: 30 * 24 * time.Hour, QueryTimeout: time.Minute, ReportCacheMB: 64, ReportMaxStale: time.Minute},
		FollowUp: defaultFollowUp(),
		Identity: IdentityConfig{TokenLifetime: 5 * time.Minute, AuditRetention: audit.DefaultRetention},
		Web: web.Config{SessionIdleTimeout: web.DefaultSessionIdleTimeout, SessionLifetime: web.DefaultSessionLifetime,
			SignInAttempts: web.DefaultSignInAttempts, SignInWindow: web.DefaultSignInWindow,
			WorkListPageSize: web.DefaultWorkListPageSize, WorkListSearchMax: web.DefaultWorkListSearchMax, OIDC: web.OIDCSignIn{Timeout: web.DefaultOIDCSignInTimeout}},
		WebOIDC: WebOIDCConfig{Enabled: true},
	}
}

// ffOptions are how every command reads its settings.
func ffOptions() []ff.Option {
	return []ff.Option{
		ff.WithEnvVarPrefix(envPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	}
}

func (c *Config) registerDatabaseFlags(fs *flag.FlagSet) {
	fs.String("config", "", "read settings from this file (lines of: flag-name value)")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL server to use, as postgres://user:pass@host:port/db (default: the embedded database under -data-dir)")
	fs.StringVar(&c.DatabaseURLFile, "database-url-file", c.DatabaseURLFile, "read -database-url from this file, to keep the password out of the environment")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", c.DBMaxConns, "largest number of database connections (0: four per CPU, at least 8)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for cartreg's own data: the embedded database lives in its postgres/ folder "+
		"(default: $XDG_DATA_HOME/cartreg, else /var/lib/cartreg for root, else ~/.local/share/cartreg)")
	if c.shareEmbedded {
		fs.BoolVar(&c.Init, "init", c.Init, "create the embedded database under -data-dir if there is none (without it the command refuses, "+
			"rather than start a second, empty database beside the server's)")
	}
	fs.StringVar(&c.PGBinDir, "pg-bin-dir", c.PGBinDir, "PostgreSQL server binaries for the embedded database (default: PATH, then the newest /usr/lib/postgresql/*/bin)")
	fs.StringVar(&c.PGUser, "pg-user", c.PGUser, "operating-system user that runs the embedded database when cartreg runs as root")
	c.registerLogFlags(fs)
}

func (c *Config) registerLogFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json, text, or auto (text on a terminal, json otherwise)")
}

func (c *Config) registerServeFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DatabaseReadURL, "database-read-url", c.DatabaseReadURL, "a PostgreSQL streaming replica of the database, where researchers' outcome queries run (default: none, they run on the primary)")
	c.registerDatabaseFlags(fs)
	fs.StringVar(&c.HTTP.Addr, "addr", c.HTTP.Addr, "HTTP listen address; loopback only by default: give :8080 to listen on every interface")
	fs.StringVar(&c.HTTP.TrustedProxies, "trusted-proxies", c.HTTP.TrustedProxies, "IP addresses or CIDR ranges of reverse proxies whose X-Forwarded-* headers are believed (default: none)")
	fs.StringVar(&c.HTTP.CORSOrigins, "cors-origins", c.HTTP.CORSOrigins, "browser origins allowed to call the API, comma-separated, e.g. https://app.example.org (default: none)")
	fs.StringVar(&c.HTTP.TLSCert, "tls-cert", c.HTTP.TLSCert, "serve HTTPS with this certificate (PEM); needs -tls-key")
	fs.StringVar(&c.HTTP.TLSKey, "tls-key", c.HTTP.TLSKey, "the private key (PEM) of -tls-cert")
	fs.StringVar(&c.DebugAddr, "debug-addr", c.DebugAddr, "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060 (default: off); keep it off public interfaces")
	fs.BoolVar(&c.Migrate, "migrate", c.Migrate, "apply pending migrations at start; with -migrate=false, refuse to start on an out-of-date schema")
	fs.StringVar(&c.HTTP.MaxBodySize, "max-body-size", c.HTTP.MaxBodySize, "largest request body accepted (e.g. 64M); larger ones get 413")
	fs.DurationVar(&c.HTTP.ReadHeaderTimeout, "read-header-timeout", c.HTTP.ReadHeaderTimeout, "time allowed to receive a request's headers")
	fs.DurationVar(&c.HTTP.ReadTimeout, "read-timeout", c.HTTP.ReadTimeout, "time allowed to receive a whole request")
	fs.DurationVar(&c.HTTP.WriteTimeout, "write-timeout", c.HTTP.WriteTimeout, "time allowed to send a response")
	fs.DurationVar(&c.HTTP.IdleTimeout, "idle-timeout", c.HTTP.IdleTimeout, "how long an idle keep-alive connection stays open")
	fs.DurationVar(&c.HTTP.ShutdownTimeout, "shutdown-timeout", c.HTTP.ShutdownTimeout, "how long in-flight requests may take to finish after SIGTERM")
	fs.StringVar(&c.FHIR.BaseURL, "base-url", c.FHIR.BaseURL, "the FHIR base URL clients use, e.g. https://registry.example/fhir (default: from each request's Host)")
	fs.IntVar(&c.FHIR.DefaultCount, "search-default-count", c.FHIR.DefaultCount, "entries per page of a search or history without _count")
	fs.IntVar(&c.FHIR.MaxCount, "search-max-count", c.FHIR.MaxCount, "the largest _count honoured")
	fs.DurationVar(&c.FHIR.Search.Timeout, "search-timeout", c.FHIR.Search.Timeout, "longest a statement of a search may run (422 beyond)")
	fs.IntVar(&c.FHIR.Search.MaxChainDepth, "search-max-chain-depth", c.FHIR.Search.MaxChainDepth, "most links a search chain may follow (a.b.name is 2)")
	fs.IntVar(&c.FHIR.Search.MaxHasDepth, "search-max-has-depth", c.FHIR.Search.MaxHasDepth, "most _has a search parameter may nest")
	fs.IntVar(&c.FHIR.Search.MaxParameters, "search-max-parameters", c.FHIR.Search.MaxParameters, "most selecting parameters a search may have, repetitions counted")
	fs.IntVar(&c.FHIR.Search.MaxValues, "search-max-values", c.FHIR.Search.MaxValues, "most values a search may have, comma-separated alternatives counted")
	fs.IntVar(&c.FHIR.Search.MaxSortKeys, "search-max-sort-keys", c.FHIR.Search.MaxSortKeys, "most keys _sort may list")
	fs.IntVar(&c.FHIR.Search.MaxIncludes, "search-max-includes", c.FHIR.Search.MaxIncludes, "most _include and _revinclude values a search may have")
	fs.IntVar(&c.FHIR.Search.MaxIncluded, "search-max-included", c.FHIR.Search.MaxIncluded, "most resources _include and _revinclude may add to one page (422 beyond)")
	fs.DurationVar(&c.FHIR.BundleTimeout, "bundle-timeout", c.FHIR.BundleTimeout, "longest a statement of a transaction or batch Bundle may run (422 beyond)")
	fs.IntVar(&c.FHIR.Bundles.MaxEntries, "bundle-max-entries", c.FHIR.Bundles.MaxEntries, "the most entries a transaction or batch Bundle may have (413 beyond)")
	fs.BoolVar(&c.FHIR.Bundles.ReferentialIntegrity, "bundle-referential-integrity", c.FHIR.Bundles.ReferentialIntegrity,
		"refuse Bundle entries that refer to local resources neither on the server nor in the Bundle")
	fs.IntVar(&c.FHIR.Limits.MaxPatchOperations, "max-patch-operations", c.FHIR.Limits.MaxPatchOperations, "the most operations one JSON Patch may have (422 beyond)")
	fs.Int64Var(&c.FHIR.Limits.MaxPatchedSize, "max-patched-size", c.FHIR.Limits.MaxPatchedSize, "the largest resource, in bytes of JSON, a JSON Patch may make (413 beyond)")
	fs.IntVar(&c.FHIR.Limits.MaxArrayLength, "max-array-length", c.FHIR.Limits.MaxArrayLength, "the most items any one array of a resource may hold (413 beyond)")
	fs.StringVar(&c.Export.Dir, "export-dir", c.Export.Dir, "where Bulk Data $export files are written (default: export/ under -data-dir); replicas must share it")
	fs.DurationVar(&c.Export.Retention, "export-retention", c.Export.Retention, "how long a finished $export and its files are kept")
	fs.IntVar(&c.Export.PageSize, "export-page-size", c.Export.PageSize, "resources an $export reads and writes at a time")
	fs.IntVar(&c.Export.MaxJobs, "export-max-jobs", c.Export.MaxJobs, "unfinished $export jobs one client may have at once (429 beyond)")
	c.registerRegistryFlags(fs)
	c.registerScheduleFlags(fs)
	c.registerIdentityFlags(fs)
	c.registerWebFlags(fs)
}

// registerRegistryFlags are the settings of the registry itself, for every command that
// writes through it.
func (c *Config) registerRegistryFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Registry.FollowUpYears, "follow-up-years", c.Registry.FollowUpYears,
		"yearly milestones of the default follow-up plan (after month 1 and month 3); 15 for long-term follow-up")
	fs.StringVar(&c.FollowUpPlan, "follow-up-plan", c.FollowUpPlan,
		`another follow-up plan: a preset (cibmtr: day 100, month 6, then yearly to 15 years; ltfu15: the default plan to 15 years) `+
			`or a JSON file: {"milestones":[{"code":"m1","label":"Month 1","target_day":30,"window_start":23,"window_end":45},…]}`)
	fs.IntVar(&c.Registry.MinCell, "outcomes-min-cell", c.Registry.MinCell,
		"researchers' outcome counts below this are suppressed; 1 shows every count (a demonstration instance)")
	fs.IntVar(&c.Registry.RoundTo, "outcomes-round-to", c.Registry.RoundTo,
		"researchers' outcome counts are rounded to a multiple of this, and rates computed from the rounded counts; 1 shows exact counts")
	fs.DurationVar(&c.Registry.OverlapWindow, "outcomes-overlap-window", c.Registry.OverlapWindow,
		"how long each user's outcome queries are remembered: one whose patients differ from a remembered one's by 1 to min-cell-1 is refused (0: off)")
	fs.DurationVar(&c.Registry.QueryTimeout, "outcomes-timeout", c.Registry.QueryTimeout,
		"longest a statement of a researcher's outcome query or analysis file may run; past it the request is a 422 (0: no limit)")
	fs.IntVar(&c.Registry.ReportCacheMB, "outcomes-cache-mb", c.Registry.ReportCacheMB,
		"memory for the response and survival reports asked for most, served again until the registry's data change (0: off)")
	fs.DurationVar(&c.Registry.ReportMaxStale, "outcomes-max-stale", c.Registry.ReportMaxStale,
		"how long after it was computed a kept outcome report may still be served once the data have changed: the most researchers' figures lag the data (0: always current)")
	fs.BoolVar(&c.Registry.AnalysisExport, "analysis-export", c.Registry.AnalysisExport,
		"let researchers download the row-level de-identified analysis file (/registry/export/analysis); a data custodian's decision, off by default")
	c.registerFollowUpFlags(fs)
	// Every command that writes matches Subscriptions, and must agree with the server on
	// which are usable, or it would put the others in error.
	fs.StringVar(&c.SubscriptionEndpoints, "subscription-endpoints", c.SubscriptionEndpoints,
		"where FHIR rest-hook Subscriptions may send notifications, comma-separated: URL prefixes (https://hooks.example.org/cartreg/), "+
			"host names (hooks.example.org, *.example.org), IP addresses or CIDR ranges; internal addresses are reached only when "+
			"named as addresses (default: none, so rest-hook Subscriptions are refused)")
}

// loadRegistry completes the registry settings: the plan file, the FHIR base URL.
func (c *Config) loadRegistry() error {
	c.Registry.BaseURL = c.FHIR.BaseURL
	if c.FollowUpPlan != "" {
		plan, err := registry.PlanNamed(c.FollowUpPlan)
		if err != nil {
			return err
		}
		c.Registry.Plan = plan
	}
	endpoints, err := outbox.ParseAllowList(strings.Split(c.SubscriptionEndpoints, ","))
	if err != nil {
		return fmt.Errorf("-subscription-endpoints: %w", err)
	}
	c.subscriptionEndpoints = endpoints
	if c.Registry.FollowUpYears < 1 {
		return fmt.Errorf("-follow-up-years must be at least 1, got %d", c.Registry.FollowUpYears)
	}
	return c.FollowUp.resolve()
}

// Validate checks every section of the settings and reads the files they point at (the
// database URL file, the follow-up plan, the SMTP password). Every command calls it, through
// prepare, before it does anything.
func (c *Config) Validate() error {
	if err := c.resolveDatabase(); err != nil {
		return err
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if err := c.validateFHIR(); err != nil {
		return err
	}
	if err := c.validateIdentity(); err != nil {
		return err
	}
	if err := c.validateWeb(); err != nil {
		return err
	}
	if err := c.validateExport(); err != nil {
		return err
	}
	return c.loadRegistry()
}

// validateExport checks the Bulk Data $export settings and puts the files under the data dir
// unless told otherwise.
func (c *Config) validateExport() error {
	if e := c.Export; e.Retention <= 0 || e.PageSize < 1 || e.MaxJobs < 1 {
		return fmt.Errorf("-export-retention (%s) must be positive, -export-page-size (%d) and -export-max-jobs (%d) at least 1",
			e.Retention, e.PageSize, e.MaxJobs)
	}
	// Absolute, whatever the directory the server starts in: a job resumed after a restart
	// must find the files it began, and with -database-url nothing else settles the data dir.
	dir := c.Export.Dir
	if dir == "" {
		data := c.DataDir
		if data == "" {
			var err error
			if data, err = defaultDataDir(); err != nil {
				return fmt.Errorf("no folder for $export files: %w", err)
			}
		}
		dir = filepath.Join(data, "export")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("-export-dir %q: %w", dir, err)
	}
	c.Export.Dir = abs
	return nil
}

// validateFHIR checks the FHIR API settings.
func (c *Config) validateFHIR() error {
	if c.FHIR.Bundles.MaxEntries < 1 {
		return fmt.Errorf("-bundle-max-entries must be at least 1, got %d", c.FHIR.Bundles.MaxEntries)
	}
	if l := c.FHIR.Limits; l.MaxPatchOperations < 1 || l.MaxPatchedSize < 1 || l.MaxArrayLength < 1 {
		return fmt.Errorf("-max-patch-operations (%d), -max-patched-size (%d) and -max-array-length (%d) must be at least 1",
			l.MaxPatchOperations, l.MaxPatchedSize, l.MaxArrayLength)
	}
	if c.FHIR.DefaultCount < 1 || c.FHIR.MaxCount < c.FHIR.DefaultCount {
		return fmt.Errorf("want 1 <= -search-default-count (%d) <= -search-max-count (%d)", c.FHIR.DefaultCount, c.FHIR.MaxCount)
	}
	// A limit of zero would read as "no limit" to an operator but be the default to the API:
	// refuse it rather than guess.
	l := c.FHIR.Search
	for _, d := range []struct {
		flag  string
		value time.Duration
	}{{"search-timeout", l.Timeout}, {"bundle-timeout", c.FHIR.BundleTimeout}} {
		if d.value < time.Millisecond {
			return fmt.Errorf("-%s must be at least 1ms, got %s", d.flag, d.value)
		}
	}
	for _, n := range []struct {
		flag  string
		value int
	}{{"search-max-chain-depth", l.MaxChainDepth}, {"search-max-has-depth", l.MaxHasDepth}, {"search-max-parameters", l.MaxParameters}, {"search-max-values", l.MaxValues},
		{"search-max-sort-keys", l.MaxSortKeys}, {"search-max-includes", l.MaxIncludes}, {"search-max-included", l.MaxIncluded}} {
		if n.value < 1 {
			return fmt.Errorf("-%s must be at least 1, got %d", n.flag, n.value)
		}
	}
	if c.FHIR.BaseURL != "" {
		u, err := url.Parse(c.FHIR.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("-base-url %q: want an absolute http(s) URL", c.FHIR.BaseURL)
		}
	}
	return nil
}

// resolveDatabase settles the database settings: the URL from its file, and a check that a
// given URL is one pgx can use.
func (c *Config) resolveDatabase() error {
	if c.DatabaseURLFile != "" {
		if c.DatabaseURL != "" {
			return errors.New("set either -database-url or -database-url-file, not both")
		}
		raw, err := os.ReadFile(c.DatabaseURLFile)
		if err != nil {
			return fmt.Errorf("reading -database-url-file: %w", err)
		}
		c.DatabaseURL = strings.TrimSpace(string(raw))
	}
	if c.DatabaseURL != "" {
		if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
			return fmt.Errorf("database URL: %w", err)
		}
	} else if err := c.resolveDataDir(); err != nil {
		return err
	}
	if c.DBMaxConns < 0 {
		return fmt.Errorf("-db-max-conns must not be negative, got %d", c.DBMaxConns)
	}
	return nil
}

// defaultDataDir is where cartreg keeps its data when told nowhere: one place per user, so
// that every command finds the server's database from whatever directory it is run in.
// $XDG_DATA_HOME/cartreg when that is set; /var/lib/cartreg for root, since the embedded
// database then runs as another user (-pg-user), who cannot enter root's home; otherwise
// ~/.local/share/cartreg, the XDG default.
func defaultDataDir() (string, error) {
	if xdg := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(xdg) {
		return filepath.Join(xdg, "cartreg"), nil
	}
	if os.Geteuid() == 0 {
		return "/var/lib/cartreg", nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", errors.New("no data directory: $HOME is not set; give -data-dir (or CARTREG_DATA_DIR)")
	}
	return filepath.Join(home, ".local", "share", "cartreg"), nil
}

// resolveDataDir settles the data directory as an absolute path, so that messages and logs
// name it unambiguously whatever directory a command runs in.
func (c *Config) resolveDataDir() error {
	if c.DataDir == "" {
		dir, err := defaultDataDir()
		if err != nil {
			return err
		}
		c.DataDir, c.dataDirDefaulted = dir, true
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("-data-dir %q: %w", c.DataDir, err)
	}
	c.DataDir = abs
	return nil
}

// newLogger builds the process's one logger, from -log-level and -log-format.
func (c *Config) newLogger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	format := c.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: readableAttr}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want json, text or auto", c.LogFormat)
}

// readableAttr is how every log line writes its values: durations as a person reads them
// ("1.2s", "9.9ms", "230µs", in JSON as well as text: log readers in both formats are people
// more often than programs, and Go's duration syntax parses back), and attributes with no
// value (a nil error) left out rather than written as "<nil>".
func readableAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		return slog.String(a.Key, roundDuration(a.Value.Duration()).String())
	case slog.KindAny:
		if a.Value.Any() == nil {
			return slog.Attr{}
		}
	}
	return a
}

// roundDuration keeps two or three significant figures: 1.234567s is 1.2s, 9.865019ms is
// 9.9ms, 1m3.5s is 1m4s.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}
