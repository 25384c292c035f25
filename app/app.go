// Package app wires cartreg together once, for the server, the operators' commands and the
// tests alike: the FHIR store and its write hooks, the registry, the follow-up tracker, the
// periodic jobs and the HTTP routes. It takes the clock and the logger once, so every part
// agrees on what time it is.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/access"
	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/bulk"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/fhir/subscription"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/web"
)

// Config is what the wiring needs, already read and checked by the caller.
type Config struct {
	FHIR     fhir.APIConfig
	Registry registry.Config
	FollowUp followup.Config
	Jobs     JobsConfig
	// Auth is the identity settings; Auth.Issuer is the server's root URL, where clients reach
	// its token endpoint.
	Auth  auth.Config
	Audit audit.Config
	// Subscriptions is how FHIR Subscriptions are honoured; its Endpoints also bound where
	// the deliverer sends their notifications, unless Jobs.Outbox names a list of its own.
	Subscriptions subscription.Config
	// ReadURL, when set, is a PostgreSQL streaming replica of the database, where the
	// registry's outcome queries run (see registry.Registry.ReadFrom).
	ReadURL string
	// Web is how people sign in to the pages.
	Web web.Config
	// Export is how Bulk Data $export jobs run; its BaseURL is FHIR.BaseURL.
	Export bulk.Config
}

// JobsConfig is how the periodic jobs of a serving process run.
type JobsConfig struct {
	// FollowUpSchedule is the cron spec of the follow-up run; "off" or "" leaves it to
	// `cartreg schedule run`.
	FollowUpSchedule string
	// Location is the time zone of the schedules (and of the follow-up calendar days).
	Location *time.Location
	Digests  followup.DigestConfig
	Outbox   outbox.Config
	// DeliveryInterval is how often queued digests and notifications are (re)tried.
	DeliveryInterval time.Duration
	// DeliveryRetention is how long delivered messages are kept before their bodies, which
	// carry patient data, are deleted.
	DeliveryRetention time.Duration
}

// App is cartreg wired on one database.
type App struct {
	Config Config
	DB     *pgxpool.Pool
	// ReadDB is the read replica's pool when Config.ReadURL is set, else nil.
	ReadDB   *pgxpool.Pool
	Store    *fhir.Store
	Searcher *fhir.Searcher
	API      *fhir.API
	Registry *registry.Registry
	FollowUp *followup.Tracker
	Auth     *auth.Service
	Audit    *audit.Recorder
	Access   *access.Policy
	Web      *web.Pages
	Export   *bulk.Exporter
	Clock    func() time.Time
	Logger   *slog.Logger
}

// New wires cartreg on db and brings the registry's published definitions and timepoints up
// to date. clock is the one source of the current time; nil means time.Now.
func New(ctx context.Context, cfg Config, db *pgxpool.Pool, clock func() time.Time, logger *slog.Logger) (*App, error) {
	if clock == nil {
		clock = time.Now
	}
	if cfg.Subscriptions.Logger == nil {
		cfg.Subscriptions.Logger = logger
	}
	if cfg.Jobs.Outbox.SubscriptionEndpoints == nil {
		cfg.Jobs.Outbox.SubscriptionEndpoints = cfg.Subscriptions.Endpoints
	}
	params := searchparam.Default()
	store := fhir.NewStore(db, params, clock)
	searcher := fhir.NewSearcher(store, params, cfg.FHIR.BaseURL)
	cfg.Registry.BaseURL = cfg.FHIR.BaseURL
	if cfg.Registry.Location == nil {
		cfg.Registry.Location = cfg.FollowUp.Location // one calendar for what is due
	}
	cfg.FHIR.Security = auth.SecurityExtension(cfg.Auth.Issuer)
	if cfg.FHIR.SupportedProfiles == nil {
		profiles, err := publishedProfiles()
		if err != nil {
			return nil, err
		}
		cfg.FHIR.SupportedProfiles = profiles
	}
	policy := access.New(nil) // its site checker is the registry's, set below
	if cfg.FHIR.Bundles.Guard == nil {
		cfg.FHIR.Bundles.Guard = policy.Guard()
	}
	reg, err := registry.New(cfg.Registry, db, store, clock, logger)
	if err != nil {
		return nil, err
	}
	var readDB *pgxpool.Pool
	if cfg.ReadURL != "" {
		if readDB, err = openReplica(ctx, cfg.ReadURL); err != nil {
			return nil, err
		}
		reg.ReadFrom(readDB)
	}
	if cfg.FHIR.InValueSet == nil {
		cfg.FHIR.InValueSet = reg.Terminology().Codes.InValueSet
	}
	followUp := followup.New(cfg.FollowUp, store, reg.Plan())
	recorder := audit.NewRecorder(db, cfg.Audit, clock, logger)

	// The write hooks run in this order within every write's transaction: the registry's
	// projection first, because follow-up reads the facts it keeps; then follow-up, which
	// closes Tasks a write satisfies; the audit record, naming what the request itself wrote,
	// after the hooks whose business rules may refuse the write (a record made, then rolled
	// back, would count as the request's record and leave a batch of refused entries with
	// none); Subscriptions last, so they hear of what the others wrote as well. Their lookup
	// carries the audit INSERT (fhir.SendWithNext), which is not sent alone; they refuse no
	// write (a Subscription that cannot be honoured is disabled, not failed).
	store.AddHook(reg.Projection())
	store.AddHook(followUp.Hook(clock))
	store.AddHook(auditWrites{recorder})
	store.AddHook(subscription.New(store, searcher, cfg.Subscriptions, clock))

	// Publishing the registry's definitions is the server's own write.
	if err := reg.Start(auth.WithPrincipal(ctx, auth.Operator("cartreg"))); err != nil {
		return nil, err
	}
	identity, err := auth.New(ctx, db, cfg.Auth, clock, logger)
	if err != nil {
		return nil, err
	}
	if err := webOIDC(&cfg); err != nil {
		identity.Close()
		return nil, err
	}
	pages, err := web.New(cfg.Web, web.Deps{DB: db, Store: store, FollowUp: followUp, Registry: reg, Audit: recorder,
		InSites: reg.InSites, Clock: clock, Logger: logger, RootURL: cfg.Auth.Issuer, Identity: identity})
	if err != nil {
		identity.Close()
		return nil, err
	}
	recorder.Start(context.WithoutCancel(ctx))
	cfg.Export.BaseURL = cfg.FHIR.BaseURL
	exporter := bulk.New(db, store, searcher, cohortOf(reg), cfg.Export, clock, logger)
	cfg.Export = exporter.Config()
	return &App{
		Config: cfg, DB: db, ReadDB: readDB, Store: store, Searcher: searcher, Registry: reg, FollowUp: followUp,
		API:  fhir.NewAPI(store, searcher, logger, cfg.FHIR),
		Auth: identity, Audit: recorder, Access: access.New(reg.InSites), Web: pages, Export: exporter,
		Clock: clock, Logger: logger,
	}, nil
}

// webOIDC checks that the pages' OpenID Connect sign-in names a provider the identity layer
// trusts, whose ID tokens are then checked like its bearer tokens, and makes the provider's
// audience the client id unless another is given: the client registered with the provider.
func webOIDC(cfg *Config) error {
	w := &cfg.Web.OIDC
	if w.Issuer == "" {
		return nil
	}
	for _, p := range cfg.Auth.OIDC {
		if strings.TrimRight(p.Issuer, "/") == strings.TrimRight(w.Issuer, "/") {
			w.Issuer = p.Issuer
			if w.ClientID == "" {
				w.ClientID = p.Audience
			}
			return nil
		}
	}
	return fmt.Errorf("the pages' OpenID Connect sign-in names %q, which is not a configured OpenID Connect provider", w.Issuer)
}

// cohortOf resolves a Group defined by a registry cohort with the outcome queries' filter.
func cohortOf(reg *registry.Registry) bulk.CohortResolver {
	return func(ctx context.Context, c bulk.Cohort) ([]string, error) {
		return reg.CohortPatients(ctx, registry.Filter{Diseases: c.Diseases, Products: c.Products, Targets: c.Targets,
			Sites: c.Sites, InfusedFrom: c.InfusedFrom, InfusedTo: c.InfusedTo})
	}
}

// coordinatorSites limits a coordinator's work lists to their sites; others see every site.
func coordinatorSites(ctx context.Context) ([]string, bool) {
	p, ok := auth.FromContext(ctx)
	if !ok || p.Role != auth.RoleCoordinator {
		return nil, false
	}
	return p.Sites, true
}

// Close flushes the audit records still queued and stops the identity service's background
// work. Call it once no request is being served.
func (a *App) Close(ctx context.Context) error {
	a.Auth.Close()
	err := a.Audit.Close(ctx)
	if a.ReadDB != nil {
		a.ReadDB.Close()
	}
	return err
}

// openReplica connects to the read replica and checks that it is one: pointing ReadURL at
// the primary by mistake would work but hide the mistake, and pointing it at an unrelated
// database would answer outcomes from other data.
func openReplica(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("read replica: %w", err)
	}
	var standby, migrated bool
	err = pool.QueryRow(ctx, `SELECT pg_is_in_recovery(), to_regclass('registry_infusion') IS NOT NULL`).Scan(&standby, &migrated)
	switch {
	case err != nil:
		err = fmt.Errorf("read replica: %w", err)
	case !standby:
		err = fmt.Errorf("read replica: the server at the read URL is not a standby (pg_is_in_recovery() is false)")
	case !migrated:
		err = fmt.Errorf("read replica: the database at the read URL has no registry tables: is it a replica of this database?")
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Routes mounts every HTTP route of cartreg on e: the FHIR API, the registry's outcomes and
// definitions, the coordinators' work lists, and the web pages.
//
// Every request is audited, then authenticated, then checked against the access policy
// before any handler sees it; a route the policy has no rule for is refused to everybody.
// A page is authenticated by its session cookie (web.Pages.Sessions), any other route by its
// bearer token: a cookie never reaches the API, so no other site's page can use it there.
func (a *App) Routes(e *echo.Echo) {
	e.Use(a.auditRequests, a.Web.Sessions(),
		a.Auth.Middleware(func(c echo.Context) bool { return access.IsPublic(c) || a.Web.SignedIn(c) }),
		a.Access.Middleware())
	a.Web.Register(e)
	a.Auth.Register(e)
	a.Export.Register(e) // static path segments ($export) win over the API's /fhir/:type/:id in echo's router
	a.API.Register(e)
	a.Registry.Register(e)
	a.Registry.Terminology().Codes.Register(e, a.Clock)
	a.FollowUp.Register(e, a.DB, a.Clock, coordinatorSites, a.Searcher)
	// The access policy has already decided who reaches the audit trail.
	a.Audit.Register(e, func(next echo.HandlerFunc) echo.HandlerFunc { return next })
}
