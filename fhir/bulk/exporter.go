package bulk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
)

// Config is how exports run.
type Config struct {
	// Dir is where export files are written, one folder per job. Replicas must share it.
	Dir string
	// Retention is how long a finished job and its files are kept (default 24h).
	Retention time.Duration
	// PageSize is how many resources are read and written at a time (default 1000): what an
	// export holds in memory, and how much an interrupted one writes again.
	PageSize int
	// MaxJobs is how many unfinished jobs one principal may have at once (default 5).
	MaxJobs int
	// Poll is how often an idle worker looks for jobs another replica queued (default 2s); a
	// job queued on this replica wakes its worker at once.
	Poll time.Duration
	// BaseURL is the FHIR base clients use; empty: taken from each request, as the API does.
	BaseURL string
}

// Defaults of Config.
const (
	DefaultRetention = 24 * time.Hour
	DefaultPageSize  = 1000
	DefaultMaxJobs   = 5
	DefaultPoll      = 2 * time.Second
)

// WithDefaults fills the zero fields of c; an empty Dir becomes a folder under the system's
// temporary directory.
func (c Config) WithDefaults() Config {
	if c.Dir == "" {
		c.Dir = filepath.Join(os.TempDir(), "cartreg-export")
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.PageSize <= 0 {
		c.PageSize = DefaultPageSize
	}
	if c.MaxJobs <= 0 {
		c.MaxJobs = DefaultMaxJobs
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	return c
}

// Cohort is a registry cohort that defines a Group by its characteristics: patients with an
// infusion of one of the diseases, products, targets and sites, infused within the dates
// (each list matches any of its values; an empty one matches everything).
type Cohort struct {
	Diseases, Products, Targets, Sites []string
	InfusedFrom, InfusedTo             *time.Time
}

// CohortResolver lists the ids of the Patients in a registry cohort.
type CohortResolver func(ctx context.Context, c Cohort) ([]string, error)

// Exporter runs $export: its HTTP routes and its worker.
type Exporter struct {
	db       *pgxpool.Pool
	store    *fhir.Store
	searcher *fhir.Searcher
	cohort   CohortResolver
	cfg      Config
	now      func() time.Time
	logger   *slog.Logger
	wake     chan struct{}
	// OnPage, when set, is called after each page is recorded (the job, the type, the lines
	// the file holds so far): for tests that stop a worker mid-export.
	OnPage func(job, resourceType string, count int64)
}

// New returns an exporter over the store's database. cohort resolves Groups defined by a
// registry cohort; nil refuses such Groups.
func New(db *pgxpool.Pool, store *fhir.Store, searcher *fhir.Searcher, cohort CohortResolver, cfg Config, now func() time.Time, logger *slog.Logger) *Exporter {
	return &Exporter{db: db, store: store, searcher: searcher, cohort: cohort, cfg: cfg.WithDefaults(),
		now: now, logger: logger, wake: make(chan struct{}, 1)}
}

// Config is the exporter's settings, defaults filled in.
func (x *Exporter) Config() Config { return x.cfg }

// The states of a job, as bulk_export_job.state holds them.
const (
	stateAccepted   = "accepted"
	stateInProgress = "in-progress"
	stateCompleted  = "completed"
	stateFailed     = "failed"
)

// params is what a job was asked to export, stored as bulk_export_job.params.
type params struct {
	Types        []string            `json:"types"`
	Since        *time.Time          `json:"since,omitempty"`
	TypeFilters  map[string][]string `json:"typeFilters,omitempty"`
	OutputFormat string              `json:"outputFormat"`
}

// job is a row of bulk_export_job.
type job struct {
	ID, State, Level, Request, Base, Principal string
	Params                                     params
	Patients                                   []string
	TransactionTime, ExpiresAt                 time.Time
	Error                                      *string
	Claims                                     int
}

// file is a row of bulk_export_file.
type file struct {
	Kind, Type, Name, Cursor string
	Count, Bytes             int64
	Done                     bool
}

var errNoJob = errors.New("no such export job")

const jobColumns = `id, state, level, request, base, principal, params, patients, transaction_time, expires_at, error, claims`

func scanJob(row pgx.Row) (*job, error) {
	j := &job{}
	err := row.Scan(&j.ID, &j.State, &j.Level, &j.Request, &j.Base, &j.Principal, &j.Params, &j.Patients,
		&j.TransactionTime, &j.ExpiresAt, &j.Error, &j.Claims)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNoJob
	}
	if err != nil {
		return nil, fmt.Errorf("reading an export job: %w", err)
	}
	return j, nil
}

func (x *Exporter) loadJob(ctx context.Context, db fhir.DBTX, id string) (*job, error) {
	return scanJob(db.QueryRow(ctx, `SELECT `+jobColumns+` FROM bulk_export_job WHERE id = $1`, id))
}

func (x *Exporter) loadFiles(ctx context.Context, db fhir.DBTX, id string) ([]file, error) {
	rows, err := db.Query(ctx, `SELECT kind, resource_type, name, cursor, count, bytes, done
		FROM bulk_export_file WHERE job_id = $1 ORDER BY kind DESC, resource_type, name`, id)
	if err != nil {
		return nil, fmt.Errorf("reading an export's files: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (file, error) {
		var f file
		return f, r.Scan(&f.Kind, &f.Type, &f.Name, &f.Cursor, &f.Count, &f.Bytes, &f.Done)
	})
}

// jobDir is where a job's files are. Job ids are UUIDs the server made, never a client's text.
func (x *Exporter) jobDir(id string) string { return filepath.Join(x.cfg.Dir, id) }

// validJobID keeps anything but the server's own ids out of file paths.
func validJobID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for _, r := range id {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// validFileName is a name this package gives files: a resource type and .ndjson.
func validFileName(name string) bool {
	typ, ok := strings.CutSuffix(name, ".ndjson")
	return ok && fhir.IsResourceType(strings.TrimSuffix(typ, ".error")) && !strings.ContainsAny(name, `/\`)
}

// wakeWorker tells this replica's worker a job is waiting.
func (x *Exporter) wakeWorker() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}
