package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/fhir/subscription"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

// app is cartreg wired together as every command that writes uses it: the FHIR store with the
// registry attached (so every write keeps the registry current), and the FHIR API on top.
// serve, import and demo all go through it, so data loaded any way ends up the same.
type app struct {
	store    *fhir.Store
	api      *fhir.API
	bundles  *fhir.BundleProcessor // the API's, for what loads Bundles without HTTP
	registry *registry.Registry
	followUp *followup.Tracker
}

// clock is the one source of the current time for every command.
var clock = time.Now

func newApp(ctx context.Context, cfg *Config, db *database, params *searchparam.Registry, logger *slog.Logger) (*app, error) {
	store := fhir.NewStore(db.pool, params, clock)
	reg, err := registry.New(cfg.Registry, db.pool, store, clock, logger)
	if err != nil {
		return nil, err
	}
	if err := reg.Start(ctx); err != nil {
		return nil, err
	}
	// After the registry's projection, whose facts it reads: writes close follow-up Tasks.
	followUp := followup.New(cfg.FollowUp.scheduler(), store, reg.Plan())
	store.AddHook(followUp.Hook(clock))
	searcher := fhir.NewSearcher(store, params, cfg.FHIR.BaseURL)
	// Last: Subscriptions hear of what every other hook wrote, in a later round.
	store.AddHook(subscription.New(store, searcher, clock))
	api := fhir.NewAPI(store, searcher, logger, cfg.FHIR)
	return &app{store: store, api: api, bundles: api.Bundles(), registry: reg, followUp: followUp}, nil
}

// openApp is how a short-lived command that writes (demo, import, schedule run) starts: its
// settings checked, the database opened and migrated, and cartreg wired on it. The caller
// closes the database with db.close(logger) when done.
func openApp(ctx context.Context, cfg *Config, stderr io.Writer) (*app, *database, *slog.Logger, error) {
	logger, err := cfg.newLogger(stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cfg.resolveDatabase(); err != nil {
		return nil, nil, nil, err
	}
	if err := cfg.loadRegistry(); err != nil {
		return nil, nil, nil, err
	}
	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := db.migrate(ctx, logger); err != nil {
		db.close(logger)
		return nil, nil, nil, err
	}
	a, err := newApp(ctx, cfg, db, searchparam.Default(), logger)
	if err != nil {
		db.close(logger)
		return nil, nil, nil, err
	}
	return a, db, logger, nil
}
