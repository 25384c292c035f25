package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ExportRun is the $export step measured on its own (-only export): on a database filled to
// Resources, the export's figures and the server's peak RSS (VmHWM) over a process that did
// nothing but start and export.
type ExportRun struct {
	Started        time.Time `json:"started"`
	Version        string    `json:"version"`
	Machine        Machine   `json:"machine"`
	Ingested       int       `json:"ingested"`        // resources the cohort's Bundles made through the API
	Copies         int       `json:"copies"`          // how many times they were copied under new ids
	Resources      int       `json:"resources"`       // in the database when the export began
	SeedSeconds    float64   `json:"seed_seconds"`    // ingest and copies
	Export         Export    `json:"export"`          // kick-off to manifest, download, RSS sampled
	ServerPeakMB   float64   `json:"server_peak_mb"`  // VmHWM of the server that exported
	ServerStartsMB float64   `json:"server_start_mb"` // its RSS once ready, before the kick-off
}

// exportOnly fills a fresh database to about o.exportResources resources and exports it.
// Ingesting a million resources through the API takes the whole harness's twenty minutes, so
// a small cohort is ingested (validated and indexed as usual) and its resources are then
// copied under new ids in SQL, each copy's JSON carrying its own id. $export reads only the
// version store, never the search indexes the copies lack, so it works on them as on any.
// The server is then restarted, so that its peak RSS is the export's alone.
func exportOnly(ctx context.Context, o options) (*ExportRun, error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return nil, err
	}
	work, cleanUp, err := workDir(o, "cartreg-bench-export-")
	if err != nil {
		return nil, err
	}
	defer cleanUp()
	res := &ExportRun{Started: time.Now().UTC(), Machine: describeMachine(), Version: binaryVersion(bin)}
	seedStart := time.Now()

	cohortDir := filepath.Join(work, "cohort")
	step("generating %d patients with cartreg synth", o.exportSeed)
	if err := runCommand(ctx, bin, "synth", "-patients", fmt.Sprint(o.exportSeed), "-seed", fmt.Sprint(o.seed),
		"-as-of", o.asOf.Format(time.DateOnly), "-out", cohortDir); err != nil {
		return nil, err
	}
	cohort, err := listCohort(cohortDir)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(work, "data")
	srv, err := startServer(ctx, bin, dataDir, filepath.Join(work, "serve.log"), o.serverArgs)
	if err != nil {
		return nil, err
	}
	defer func() { srv.stop() }()
	db, err := srv.database(ctx)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	res.Machine.PostgreSQL = postgresVersion(ctx, db)
	res.Machine.PostgreSQLSettings = postgresSettings(ctx, db)
	creds, err := registerClient(ctx, o.bin, srv.dataDir, srv.base)
	if err != nil {
		return nil, err
	}
	c := newClient(srv.base, 32, creds)
	var before, after int64
	if err := db.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM resource_version`).Scan(&before); err != nil {
		return nil, err
	}
	step("ingest: %d transaction Bundles from %d clients", len(cohort), ingestClients)
	if _, err := ingest(ctx, c, cohort); err != nil {
		return nil, err
	}
	if err := db.QueryRow(ctx, `SELECT max(seq) FROM resource_version`).Scan(&after); err != nil {
		return nil, err
	}
	if res.Ingested, err = countRows(ctx, db, fmt.Sprintf(`SELECT count(*) FROM resource_version WHERE seq > %d`, before)); err != nil {
		return nil, err
	}
	total, err := countRows(ctx, db, `SELECT count(*) FROM resource WHERE NOT deleted`)
	if err != nil {
		return nil, err
	}
	if res.Ingested == 0 {
		return nil, fmt.Errorf("the cohort made no resources")
	}
	res.Copies = max(0, (o.exportResources-total+res.Ingested-1)/res.Ingested)
	step("copying the %d ingested resources %d times, to over %d resources", res.Ingested, res.Copies, o.exportResources)
	done := progress(res.Copies, "copies")
	for k := 1; k <= res.Copies; k++ {
		if err := copyResources(ctx, db, before, after, fmt.Sprintf("-c%d", k)); err != nil {
			return nil, err
		}
		done()
	}
	if _, err := db.Exec(ctx, `VACUUM ANALYZE resource, resource_version`); err != nil {
		return nil, err
	}
	if res.Resources, err = countRows(ctx, db, `SELECT count(*) FROM resource WHERE NOT deleted`); err != nil {
		return nil, err
	}
	res.SeedSeconds = time.Since(seedStart).Seconds()

	step("restarting the server, so that its peak RSS is the export's")
	srv.stop()
	if srv, err = startServer(ctx, bin, dataDir, filepath.Join(work, "serve-export.log"), o.serverArgs); err != nil {
		return nil, err
	}
	if res.ServerStartsMB, err = srv.rssMB(); err != nil {
		return nil, err
	}
	// Its address changed, and the token endpoint with it: a client of its own.
	if creds, err = registerClient(ctx, o.bin, srv.dataDir, srv.base); err != nil {
		return nil, err
	}
	c = newClient(srv.base, 32, creds)
	step("$export: %d resources, kick-off to manifest, then each file downloaded", res.Resources)
	if res.Export, err = exportAll(ctx, c, srv); err != nil {
		return nil, err
	}
	if res.Export.Resources != res.Resources {
		return nil, fmt.Errorf("$export wrote %d resources, the database holds %d", res.Export.Resources, res.Resources)
	}
	if res.ServerPeakMB, err = srv.peakRSSMB(); err != nil {
		return nil, err
	}
	return res, nil
}

// copyResources copies the resources whose versions are in (from, to] of the version store
// under their id plus suffix, in one transaction: every version, with the id in its JSON
// changed to match, and the resource's current-version row.
func copyResources(ctx context.Context, db *pgxpool.Pool, from, to int64, suffix string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO resource_version (resource_type, resource_id, version_id, last_updated, body)
			SELECT resource_type, resource_id || $3, version_id, last_updated,
			       replace(body, '"id":"' || resource_id || '"', '"id":"' || resource_id || $3 || '"')
			FROM resource_version WHERE seq > $1 AND seq <= $2 ORDER BY seq`, from, to, suffix); err != nil {
			return fmt.Errorf("copying versions: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO resource (resource_type, resource_id, version_id, last_updated, deleted)
			SELECT r.resource_type, r.resource_id || $3, r.version_id, r.last_updated, r.deleted
			FROM resource r WHERE EXISTS (SELECT 1 FROM resource_version v WHERE v.resource_type = r.resource_type
			  AND v.resource_id = r.resource_id AND v.seq > $1 AND v.seq <= $2)`, from, to, suffix)
		if err != nil {
			return fmt.Errorf("copying resources: %w", err)
		}
		// Every copy must carry its own id, or the export would list one resource many times.
		var wrong int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM resource_version WHERE resource_id LIKE '%' || $1
			AND body IS NOT NULL AND strpos(body, '"id":"' || resource_id || '"') = 0`, suffix).Scan(&wrong); err != nil {
			return err
		}
		if wrong > 0 || tag.RowsAffected() == 0 {
			return fmt.Errorf("copy %s: %d of %d copied resources lack their new id", suffix, wrong, tag.RowsAffected())
		}
		return nil
	})
}

func printExportRun(r *ExportRun) {
	e := r.Export
	m := r.Machine
	fmt.Printf("\n%s, %d cores, %d GiB; %s; %s; %s; %s; %s\n\n",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.postgresDescription(), m.Go, r.Version, r.Started.Format(time.DateOnly))
	fmt.Printf("database: %s resources (%s ingested through the API, copied %d times) in %.0f s\n",
		thousands(float64(r.Resources)), thousands(float64(r.Ingested)), r.Copies, r.SeedSeconds)
	fmt.Printf("$export:  %s resources/s (%s resources, %d files, %.0f s from kick-off to manifest)\n",
		thousands(e.ResourcesPerSecond), thousands(float64(e.Resources)), e.Files, e.Seconds)
	fmt.Printf("download: %.0f s, every file's lines counted against the manifest\n", e.DownloadSeconds)
	fmt.Printf("server:   peak RSS %.0f MB (VmHWM; %.0f MB once ready; largest sampled during the export %.0f MB)\n",
		r.ServerPeakMB, r.ServerStartsMB, e.PeakRSSMB)
}

func writeRunJSON(path string, r any) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
