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
	// BaseURL is the server's FHIR base URL, so absolute references to it count as local.
	BaseURL string
}

// Registry is the CAR-T registry on top of the FHIR store: the projection that keeps its
// tables current, and the outcome queries researchers run.
type Registry struct {
	cfg        Config
	db         *pgxpool.Pool
	store      *fhir.Store
	terms      *Terminology
	projection *Projection
	now        func() time.Time
	logger     *slog.Logger
}

// New attaches the registry to store: from now on every write through it keeps the registry
// tables current, in the same transaction. now is the clock outcome queries run at.
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
	r := &Registry{cfg: cfg, db: db, store: store, terms: terms, now: now, logger: logger,
		projection: NewProjection(terms, cfg.Plan, cfg.BaseURL)}
	store.AddHook(r.projection)
	return r, nil
}

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

// Plan is the follow-up plan in force.
func (r *Registry) Plan() Plan { return r.cfg.Plan }

// Terminology is the registry's terminology.
func (r *Registry) Terminology() *Terminology { return r.terms }
