package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/registry"
)

// app is cartreg wired together as every command that writes uses it: the FHIR store with the
// registry attached (so every write keeps the registry current), and the FHIR API on top.
// serve, import and demo all go through it, so data loaded any way ends up the same.
type app struct {
	store    *fhir.Store
	api      *fhir.API
	registry *registry.Registry
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
	api := fhir.NewAPI(store, fhir.NewSearcher(store, params, cfg.FHIR.BaseURL), logger, cfg.FHIR)
	return &app{store: store, api: api, registry: reg}, nil
}
