package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/postgres"
)

// database is the one store: a pool on the configured server, or on the embedded cluster
// that it started and must stop.
type database struct {
	pool    *pgxpool.Pool
	cluster *postgres.Cluster // nil when an external server is configured, or shared
	shared  bool              // the embedded database, owned by a running cartreg serve
}

// describe names the database for the log: which kind, and where.
func (db *database) describe(cfg *pgxpool.Config) string {
	switch {
	case db.cluster != nil:
		return "embedded, " + db.cluster.Dir
	case db.shared:
		return "embedded, shared with the running server"
	}
	return redact(cfg)
}

// clusterExists says whether an embedded cluster has been made under dir (postgres.Cluster's
// layout: data/PG_VERSION is written by initdb).
func clusterExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION"))
	return err == nil
}

// checkClusterExists refuses a short-lived command (demo, import, schedule run, ...) the
// embedded database when there is none under dir, unless -init is given: a command run with a
// data dir other than the server's must not start a second, empty database of its own and
// write there. serve makes its database on first start; it only warns when a data dir of an
// older cartreg (./var, the former default) is found beside an empty new default.
func checkClusterExists(cfg *Config, dir string, logger *slog.Logger) error {
	if clusterExists(dir) {
		return nil
	}
	legacy := ""
	if cfg.dataDirDefaulted {
		if abs, err := filepath.Abs(filepath.Join("var", "postgres")); err == nil && clusterExists(abs) {
			legacy = filepath.Dir(abs)
		}
	}
	if !cfg.shareEmbedded {
		if legacy != "" {
			logger.Warn("a database made by an older cartreg is in ./var, but the data dir is now elsewhere; "+
				"to keep using it, stop and start again with -data-dir "+legacy, "data_dir", cfg.DataDir)
		}
		return nil
	}
	if cfg.Init {
		return nil
	}
	msg := fmt.Sprintf("no embedded database in %s (data dir %s). If a server is running, give this command "+
		"its data dir (-data-dir DIR or CARTREG_DATA_DIR=DIR) or its -database-url; to create a new, empty database here, add -init",
		dir, cfg.DataDir)
	if legacy != "" {
		msg += fmt.Sprintf(". There is one made by an older cartreg in %s: -data-dir %s uses it", legacy, legacy)
	}
	return errors.New(msg)
}

// embeddedSettings depart from PostgreSQL's defaults only where cartreg's own use calls for
// it; durability (fsync, synchronous_commit, full_page_writes) is left alone.
//
// autovacuum_naptime: a new registry's first load starts on empty tables, so the statements
// each connection prepares get generic plans that scan whole tables (cheapest when empty),
// and keep them until ANALYZE invalidates them. At the default naptime (1 min) a first load
// spends its first minute reading ever larger tables for every conditional create: 1,000
// patients loaded cost 3.0 ms of PostgreSQL CPU per resource instead of 0.7. Ten seconds
// bounds that, and costs one autovacuum worker start per database every ten seconds.
var embeddedSettings = map[string]string{"autovacuum_naptime": "10s"}

// embeddedStartTimeout covers initdb on a first start, which is the slow case.
const embeddedStartTimeout = 2 * time.Minute

func openDatabase(ctx context.Context, cfg *Config, logger *slog.Logger) (*database, error) {
	db := &database{}
	url := cfg.DatabaseURL
	if url == "" {
		bins, err := postgres.FindBinaries(cfg.PGBinDir)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(cfg.DataDir, "postgres")
		if err := checkClusterExists(cfg, dir, logger); err != nil {
			return nil, err
		}
		db.cluster = &postgres.Cluster{
			Dir:      dir,
			Binaries: bins,
			RunAs:    cfg.PGUser,
			Logger:   logger,
			Settings: embeddedSettings,
		}
		startCtx, cancel := context.WithTimeout(ctx, embeddedStartTimeout)
		defer cancel()
		err = db.cluster.Start(startCtx)
		switch {
		case err == nil:
			url = db.cluster.URL(postgres.DefaultDatabase)
		case errors.Is(err, postgres.ErrInUse) && cfg.shareEmbedded:
			// A running `cartreg serve` owns it: work on it as one more client.
			if url, err = db.cluster.SharedURL(postgres.DefaultDatabase); err != nil {
				return nil, err
			}
			logger.Info("using the embedded database of the running server", "dir", db.cluster.Dir)
			db.cluster, db.shared = nil, true
		default:
			return nil, fmt.Errorf("starting the embedded database: %w", err)
		}
	}
	poolCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		db.close(logger)
		return nil, fmt.Errorf("database URL: %w", err)
	}
	poolCfg.MaxConns = int32(defaultMaxConns())
	if cfg.DBMaxConns > 0 {
		poolCfg.MaxConns = int32(cfg.DBMaxConns)
	}
	if db.pool, err = pgxpool.NewWithConfig(ctx, poolCfg); err == nil {
		err = db.pool.Ping(ctx)
	}
	if err != nil {
		db.close(logger)
		return nil, fmt.Errorf("connecting to the database at %s: %w", redact(poolCfg), err)
	}
	logger.Info("database connected", "database", db.describe(poolCfg))
	return db, nil
}

// defaultMaxConns is the pool size without -db-max-conns: four connections per CPU, at least
// eight. A write holds its connection while Go parses and validates its resources, so with
// pgx's default (one per CPU, at least four) requests queue for a connection while PostgreSQL
// idles; on 2 cores, 8 connections ingest Bundles about 1.5 times as fast as 4.
func defaultMaxConns() int { return max(8, 4*runtime.NumCPU()) }

// redact names the server without its password, for logs and errors.
func redact(cfg *pgxpool.Config) string {
	return fmt.Sprintf("%s@%s:%d/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
}

// stopped is closed if the embedded database exits on its own; never for an external one.
func (db *database) stopped() <-chan struct{} {
	if db.cluster == nil {
		return nil
	}
	return db.cluster.Done()
}

func (db *database) close(logger *slog.Logger) {
	if db.pool != nil {
		db.pool.Close()
	}
	if db.cluster != nil {
		if err := db.cluster.Stop(30 * time.Second); err != nil {
			logger.Error("stopping the embedded database", "error", err)
		}
	}
}

// migrate applies pending migrations.
func (db *database) migrate(ctx context.Context, logger *slog.Logger) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring a connection to migrate: %w", err)
	}
	defer conn.Release()
	applied, err := migrations.Up(ctx, conn.Conn(), logger)
	if err != nil {
		return err
	}
	st, err := migrations.GetStatus(ctx, conn)
	if err != nil {
		return err
	}
	logger.Info("database schema up to date", "version", st.Current, "applied_now", len(applied))
	return nil
}
