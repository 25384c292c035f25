package migrations_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestEmbeddedMigrationsAreNumberedWithoutGaps(t *testing.T) {
	names, err := migrations.Names()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no migrations embedded")
	}
}

func TestUpMigratesAnEmptyDatabaseOnce(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, pgtest.NewEmptyDatabaseURL(t))
	names, _ := migrations.Names()

	before, err := migrations.GetStatus(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if before.Current != 0 || int(before.Latest) != len(names) || len(before.Pending) != len(names) {
		t.Fatalf("status before = %+v", before)
	}
	if !errors.Is(before.Check(), migrations.ErrSchemaOutdated) {
		t.Fatalf("Check before = %v, want ErrSchemaOutdated", before.Check())
	}
	// Reading the status must not have created anything.
	var tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("GetStatus wrote to the database: %d tables (%v)", tables, err)
	}

	applied, err := migrations.Up(ctx, conn, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(names) {
		t.Fatalf("applied %v, want %v", applied, names)
	}
	after, err := migrations.GetStatus(ctx, conn)
	if err != nil || after.Check() != nil || len(after.Pending) != 0 {
		t.Fatalf("status after = %+v, %v", after, err)
	}
	again, err := migrations.Up(ctx, conn, quiet)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Up applied %v (%v), want nothing", again, err)
	}
}

func TestConcurrentUpAppliesEachMigrationOnce(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewEmptyDatabaseURL(t)
	const replicas = 6
	conns := make([]*pgx.Conn, replicas)
	for i := range conns {
		conns[i] = connect(t, url)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  []error
	)
	for _, conn := range conns {
		wg.Add(1)
		go func(conn *pgx.Conn) {
			defer wg.Done()
			applied, err := migrations.Up(ctx, conn, quiet)
			mu.Lock()
			defer mu.Unlock()
			total += len(applied)
			if err != nil {
				errs = append(errs, err)
			}
		}(conn)
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent Up failed: %v", errs)
	}
	names, _ := migrations.Names()
	if total != len(names) {
		t.Fatalf("%d migrations applied across %d replicas, want each of %d once", total, replicas, len(names))
	}
}

func TestASchemaNewerThanTheBinaryIsRefused(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, pgtest.NewDatabaseURL(t))
	if _, err := conn.Exec(ctx, "UPDATE schema_version SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	st, err := migrations.GetStatus(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(st.Check(), migrations.ErrSchemaTooNew) {
		t.Fatalf("Check = %v, want ErrSchemaTooNew", st.Check())
	}
	if _, err := migrations.Up(ctx, conn, quiet); !errors.Is(err, migrations.ErrSchemaTooNew) {
		t.Fatalf("Up = %v, want ErrSchemaTooNew", err)
	}
}

func TestResourceStoreKeepsVersionsAndTheCurrentOne(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	_, err := db.Exec(ctx, `
		INSERT INTO resource_version (resource_type, resource_id, version_id, last_updated, body)
		VALUES ('Patient', 'p1', 1, now(), '{"resourceType":"Patient","id":"p1"}'),
		       ('Patient', 'p1', 2, now(), NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO resource VALUES ('Patient', 'p1', 2, now(), true)`); err != nil {
		t.Fatal(err)
	}
	// The current version must be one that exists.
	_, err = db.Exec(ctx, `UPDATE resource SET version_id = 3 WHERE resource_id = 'p1'`)
	if err == nil {
		t.Fatal("resource pointed at a version that does not exist")
	}
}
