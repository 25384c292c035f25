// Package migrations holds the database schema as numbered SQL files, embedded in the binary,
// and applies them with tern. tern runs each file in its own transaction and holds a
// PostgreSQL advisory lock while it works, so replicas that start together apply each
// migration exactly once: the others wait, then find nothing left to do.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

// Files holds the migration files, NNN_name.sql, applied in numeric order.
//
//go:embed *.sql
var Files embed.FS

// versionTable is where tern records how far the schema has been migrated.
const versionTable = "public.schema_version"

// ErrSchemaOutdated means the database lacks migrations this binary has.
var ErrSchemaOutdated = errors.New("database schema is out of date")

// ErrSchemaTooNew means the database was migrated by a newer cartreg than this one.
var ErrSchemaTooNew = errors.New("database schema is newer than this cartreg")

// Status says how far a database's schema is from this binary's.
type Status struct {
	Current int32    `json:"current"`
	Latest  int32    `json:"latest"`
	Pending []string `json:"pending,omitempty"`
}

// Names lists the embedded migration files in the order they apply.
func Names() ([]string, error) {
	return migrate.FindMigrations(Files)
}

// Up applies every pending migration and returns the names of those it applied.
func Up(ctx context.Context, conn *pgx.Conn, logger *slog.Logger) ([]string, error) {
	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return nil, fmt.Errorf("preparing migrations: %w", err)
	}
	if err := m.LoadMigrations(Files); err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	var applied []string
	m.OnStart = func(sequence int32, name, direction, _ string) {
		logger.Info("applying migration", "version", sequence, "name", name)
		applied = append(applied, name)
	}
	if err := m.Migrate(ctx); err != nil {
		var tooNew migrate.BadVersionError
		if errors.As(err, &tooNew) {
			return applied, fmt.Errorf("%w: %v", ErrSchemaTooNew, err)
		}
		return applied, fmt.Errorf("migrating: %w", err)
	}
	return applied, nil
}

// Querier is what GetStatus needs: a connection, a pool or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// GetStatus reads the schema version without writing anything, so it is safe for a
// readiness probe and for a server that must not migrate.
func GetStatus(ctx context.Context, q Querier) (Status, error) {
	names, err := Names()
	if err != nil {
		return Status{}, err
	}
	st := Status{Latest: int32(len(names))}
	var migrated bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, versionTable).Scan(&migrated); err != nil {
		return Status{}, fmt.Errorf("looking for the schema version table: %w", err)
	}
	if migrated {
		if err := q.QueryRow(ctx, "SELECT version FROM "+versionTable).Scan(&st.Current); err != nil {
			return Status{}, fmt.Errorf("reading the schema version: %w", err)
		}
	}
	for i := st.Current; i < st.Latest; i++ {
		st.Pending = append(st.Pending, names[i])
	}
	return st, nil
}

// Check fails with ErrSchemaOutdated or ErrSchemaTooNew unless the schema is exactly this
// binary's.
func (s Status) Check() error {
	switch {
	case s.Current < s.Latest:
		return fmt.Errorf("%w: at version %d of %d; run `cartreg migrate up`", ErrSchemaOutdated, s.Current, s.Latest)
	case s.Current > s.Latest:
		return fmt.Errorf("%w: at version %d, this binary knows %d; upgrade cartreg", ErrSchemaTooNew, s.Current, s.Latest)
	}
	return nil
}
