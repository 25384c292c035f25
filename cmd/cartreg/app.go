package main

import (
	"context"
	"io"
	"log/slog"
	"os/user"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir/subscription"
)

// appConfig is the wiring's share of the settings, once Validate has settled them.
func (c *Config) appConfig() app.Config {
	f := &c.FollowUp
	if c.FHIR.SoftwareVersion == "" && version != "dev" {
		c.FHIR.SoftwareVersion = version // as the build stamped it; else the module's own
	}
	return app.Config{
		FHIR:     c.FHIR,
		Registry: c.Registry,
		FollowUp: f.tracker(),
		Jobs: app.JobsConfig{
			FollowUpSchedule:  f.Schedule,
			Location:          f.location,
			Digests:           f.digests(c.FHIR.BaseURL),
			Outbox:            f.outbox(),
			DeliveryInterval:  f.DeliveryInterval,
			DeliveryRetention: f.DeliveryRetention,
		},
		Auth:          c.auth,
		Audit:         audit.Config{Retention: c.Identity.AuditRetention, BaseURL: c.FHIR.BaseURL},
		Subscriptions: subscription.Config{Endpoints: c.subscriptionEndpoints},
		ReadURL:       c.DatabaseReadURL,
		Web:           c.Web,
		Export:        c.Export,
	}
}

// prepare is how every command starts: its logger, then every setting checked, whichever of
// them the command's flags expose (the rest keep their defaults, which are valid).
func (c *Config) prepare(stderr io.Writer) (*slog.Logger, error) {
	logger, err := c.newLogger(stderr)
	if err != nil {
		return nil, err
	}
	return logger, c.Validate()
}

// openApp is how a short-lived command that writes (demo, import, schedule run) starts: its
// settings checked, the database opened and migrated, and cartreg wired on it with clock as
// its time. The caller closes the database with db.close(logger) when done.
//
// What the command writes is audited as the operator who ran it (asOperator).
func openApp(ctx context.Context, cfg *Config, clock func() time.Time, stderr io.Writer) (*app.App, *database, *slog.Logger, error) {
	logger, err := cfg.prepare(stderr)
	if err != nil {
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
	a, err := app.New(ctx, cfg.appConfig(), db.pool, clock, logger)
	if err != nil {
		db.close(logger)
		return nil, nil, nil, err
	}
	return a, db, logger, nil
}

// asOperator is ctx acting for the operator running command on this machine: an
// administrator (they can reach the database already), named in the audit trail by their
// operating-system account.
func asOperator(ctx context.Context, command string) context.Context {
	name := "unknown user"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return auth.WithPrincipal(ctx, auth.Operator("cartreg "+command+" by "+name))
}
