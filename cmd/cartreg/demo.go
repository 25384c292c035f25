package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/examples"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry"
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
	ctx = asOperator(ctx, "demo")
	a, db, logger, err := openApp(ctx, cfg, time.Now, stderr)
	if err != nil {
		return err
	}
	defer db.close(logger)
	defer a.Close(context.WithoutCancel(ctx))
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
	return printDemoPatients(ctx, a, db, stdout)
}

// examplePatientSystem is the identifier system of the example patients (examples/).
const examplePatientSystem = "http://cartreg.org/fhir/example/patient"

// printDemoPatients shows what the registry made of the examples: what a coordinator would
// check first. It reads the projection, as outcome queries do.
func printDemoPatients(ctx context.Context, a *app.App, db *database, w io.Writer) error {
	patients, err := a.Store.ByIdentifierSystem(ctx, db.pool, "Patient", examplePatientSystem)
	if err != nil {
		return err
	}
	var ids []string
	for _, p := range patients {
		ids = append(ids, p.ID)
	}
	courses, err := a.Registry.Courses(ctx, ids)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATIENT\tDISEASE\tPRODUCT\tTARGET\tINFUSED\tDAY\tTIMEPOINT\tRESPONSE")
	for _, p := range patients { // in the order of their example identifiers
		first := true
		for _, c := range courses {
			if c.Patient != p.ID {
				continue
			}
			assessments := c.Assessments
			if len(assessments) == 0 {
				assessments = []registry.Assessment{{}}
			}
			for _, as := range assessments {
				// The patient's columns on their first row only.
				id, disease, product, targets, infused := "", "", "", "", ""
				if first {
					id, disease, product = "Patient/"+p.ID, cmp.Or(c.Disease, "?"), strings.TrimSpace(c.Product)
					targets, infused = strings.Join(c.Targets, "+"), c.InfusedOn.Format(time.DateOnly)
					first = false
				}
				day, milestone := "", as.Milestone
				if as.Day != nil {
					day = strconv.Itoa(*as.Day)
				}
				if milestone == "" && as.Observation != "" {
					milestone = "unscheduled"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, disease, product, targets, infused, day, milestone, as.Category)
			}
		}
	}
	return tw.Flush()
}
