package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/cartreg/cartreg/examples"
	"github.com/cartreg/cartreg/fhir"
)

func demoCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	cfg.registerRegistryFlags(fs)
	return &ffcli.Command{
		Name:       "demo",
		ShortUsage: "cartreg demo [flags]",
		ShortHelp:  "load the five example CAR-T patients (examples/) into the configured database",
		LongHelp: "Loads the transaction Bundles of examples/ through the same code as POST /fhir, into the\n" +
			"database the usual settings name (-database-url / CARTREG_DATABASE_URL, or the embedded one),\n" +
			"then prints each patient's infusion and assessments with the follow-up timepoint each was\n" +
			"assigned. Running it again changes nothing: every entry is a conditional create.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("demo takes no arguments, got %q", args)
			}
			return runDemo(ctx, &cfg, stdout, stderr)
		},
	}
}

func runDemo(ctx context.Context, cfg *Config, stdout, stderr io.Writer) error {
	a, db, logger, err := openApp(ctx, cfg, time.Now, stderr)
	if err != nil {
		return err
	}
	defer db.close(logger)
	files, err := fs.Glob(examples.Bundles, "*.json")
	if err != nil {
		return err
	}
	sort.Strings(files)
	written := 0
	for _, name := range files {
		raw, err := fs.ReadFile(examples.Bundles, name)
		if err != nil {
			return err
		}
		n, err := a.API.Bundles().Import(ctx, raw, nil)
		if err != nil {
			var o *fhir.Outcome
			if errors.As(err, &o) {
				return fmt.Errorf("examples/%s was refused: %s", name, o.Error())
			}
			return fmt.Errorf("loading examples/%s: %w", name, err)
		}
		written += n
	}
	fmt.Fprintf(stdout, "%d example patients loaded (%d resources written; 0 means they were loaded before)\n\n", len(files), written)
	return printDemoPatients(ctx, db, stdout)
}

// printDemoPatients shows what the registry made of the examples: what a coordinator would
// check first. It reads the projection, as outcome queries do.
func printDemoPatients(ctx context.Context, db *database, w io.Writer) error {
	rows, err := db.pool.Query(ctx, `
		SELECT p.resource_id, coalesce(i.disease, '?'), i.product_label, array_to_string(i.targets, '+'), i.infused_on,
			coalesce(a.day::text, ''), coalesce(a.milestone, CASE WHEN a.observation_id IS NULL THEN '' ELSE 'unscheduled' END),
			coalesce(a.category, '')
		FROM registry_infusion i
		JOIN resource p ON p.resource_type = 'Patient' AND p.resource_id = i.patient_id
		JOIN search_token t ON t.resource_type = 'Patient' AND t.resource_id = i.patient_id AND t.code = 'identifier'
			AND t.system = 'http://cartreg.org/fhir/example/patient'
		LEFT JOIN registry_assessment a ON a.infusion_type = i.resource_type AND a.infusion_id = i.resource_id
		ORDER BY t.value, i.infused_on, a.day`)
	if err != nil {
		return err
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATIENT\tDISEASE\tPRODUCT\tTARGET\tINFUSED\tDAY\tTIMEPOINT\tRESPONSE")
	last := ""
	for rows.Next() {
		var id, disease, product, targets, day, milestone, category string
		var infused any
		if err := rows.Scan(&id, &disease, &product, &targets, &infused, &day, &milestone, &category); err != nil {
			return err
		}
		if id == last {
			id, disease, product, targets, infused = "", "", "", "", ""
		} else {
			last = id
			id = "Patient/" + id
			if t, ok := infused.(interface{ Format(string) string }); ok {
				infused = t.Format("2006-01-02")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\n", id, disease, strings.TrimSpace(product), targets, infused, day, milestone, category)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return tw.Flush()
}
