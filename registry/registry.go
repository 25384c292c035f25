package registry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
)

// Config is the registry's configuration.
type Config struct {
	// Plan is the follow-up plan; zero means DefaultPlan(FollowUpYears).
	Plan Plan
	// FollowUpYears is the default plan's horizon in years (5: the five-year milestone).
	FollowUpYears int
	// MinCell is the smallest count researchers see; smaller counts are suppressed (5). 1 or
	// less turns suppression off, for a demonstration instance with a handful of patients.
	MinCell int
	// RoundTo is the base every count researchers see is rounded to, halves up (5, as
	// OpenSAFELY rounds); rates are computed from the rounded counts. 1 or less shows counts
	// as they are.
	RoundTo int
	// OverlapWindow is how long the cohorts of each principal's outcome queries are
	// remembered: a query whose cohort differs from one of them by 1 to MinCell-1 patients is
	// refused. Zero turns the control off.
	OverlapWindow time.Duration
	// AnalysisExport allows researchers the row-level de-identified analysis file
	// (/registry/export/analysis). Off by default: with it a researcher can compute any
	// aggregate, so releasing it is a data custodian's decision (a data use agreement), not a
	// default.
	AnalysisExport bool
	// QueryTimeout bounds each statement of an outcome query or analysis file (PostgreSQL's
	// statement_timeout): past it the request is a 422 naming CARTREG_OUTCOMES_TIMEOUT, so one
	// researcher's unlucky filter cannot hold a connection and a core for minutes. Zero is no
	// limit.
	QueryTimeout time.Duration
	// ReportCacheMB is how much memory the response and survival reports researchers ask for
	// most may keep, with their cohorts, to be served again until the registry's data change
	// (reportCache). Zero turns the cache off.
	ReportCacheMB int
	// ReportMaxStale is how long after it was computed a kept report may still be served
	// when the data have changed since: the most the figures researchers see may lag the
	// data. Zero serves a kept report only while the data are exactly as it saw them.
	ReportMaxStale time.Duration
	// BaseURL is the server's FHIR base URL, so absolute references to it count as local.
	BaseURL string
	// Location is the time zone whose calendar "today" is in, as of which outcomes are counted;
	// UTC if nil. Package app sets the follow-up time zone, so outcomes and the work list agree
	// on what is due. An event's own day is always the date as written, whatever this is.
	Location *time.Location
}

// Registry is the CAR-T registry on top of the FHIR store: the projection that keeps its
// tables current, and the outcome queries researchers run.
type Registry struct {
	cfg Config
	db  *pgxpool.Pool
	// read is where outcome queries run: a streaming replica when one is configured, so
	// researchers' heavy aggregates do not compete with the EHRs' writes; else db.
	read       *pgxpool.Pool
	store      *fhir.Store
	terms      *Terminology
	projection *Projection
	reports    *reportCache // nil: off
	now        func() time.Time
	logger     *slog.Logger
}

// New returns the registry over store. Its tables are kept current only once its Projection
// is installed as one of the store's write hooks (package app does it, in the hooks' order).
// now is the clock outcome queries run at.
func New(cfg Config, db *pgxpool.Pool, store *fhir.Store, now func() time.Time, logger *slog.Logger) (*Registry, error) {
	terms, err := LoadTerminology()
	if err != nil {
		return nil, err
	}
	if cfg.FollowUpYears <= 0 {
		cfg.FollowUpYears = 5
	}
	if len(cfg.Plan.Milestones) == 0 {
		cfg.Plan = DefaultPlan(cfg.FollowUpYears)
	}
	if err := cfg.Plan.Validate(); err != nil {
		return nil, err
	}
	reports, err := newReportCache(int64(cfg.ReportCacheMB)<<20, cfg.ReportMaxStale, now)
	if err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, db: db, read: db, store: store, terms: terms, now: now, logger: logger,
		projection: NewProjection(terms, cfg.Plan, cfg.BaseURL), reports: reports}
	return r, nil
}

// ReadFrom sends the outcome queries to pool, a read replica of the registry's database.
// Its answers lag the primary by the replication delay, which aggregates over years of
// follow-up can afford; the projection, site checks and everything written stay on the
// primary.
func (r *Registry) ReadFrom(pool *pgxpool.Pool) { r.read = pool }

// Projection is the write hook that keeps the registry's tables current, in each write's own
// transaction.
func (r *Registry) Projection() fhir.WriteHook { return r.projection }

// Start publishes the registry's definitions and brings stored timepoints in line with the
// configured plan; serve, import and demo run it before doing anything else.
func (r *Registry) Start(ctx context.Context) error {
	n, err := Publish(ctx, r.store)
	if err != nil {
		return fmt.Errorf("publishing registry definitions: %w", err)
	}
	if n > 0 {
		r.logger.Info("registry definitions published", "updated", n)
	}
	return r.projection.ApplyPlan(ctx, r.store)
}

// MaxStale is how far behind the data the outcome reports may be (Config.ReportMaxStale);
// zero when they are always current.
func (r *Registry) MaxStale() time.Duration {
	if r.reports == nil {
		return 0
	}
	return r.cfg.ReportMaxStale
}

// Plan is the follow-up plan in force.
func (r *Registry) Plan() Plan { return r.cfg.Plan }

// Terminology is the registry's terminology.
func (r *Registry) Terminology() *Terminology { return r.terms }
