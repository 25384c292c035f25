package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/cartreg/cartreg/registry/synth"
)

func synthCommand(stdout io.Writer) *ffcli.Command {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	patients := fs.Int("patients", 100, "number of patients to generate")
	seed := fs.Uint64("seed", 1, "random seed: the same seed and flags give byte-identical files")
	out := fs.String("out", "", "directory to write the Bundles to, one file per patient (created if missing)")
	asOf := fs.String("as-of", "", "data cut-off as YYYY-MM-DD: nothing is dated after it (default: today, UTC)")
	first := fs.String("first-infusion", "", "earliest infusion date as YYYY-MM-DD (default: 8 years before -as-of)")
	sites := fs.Int("sites", 12, "number of treating sites (in the US, China and Europe)")
	return &ffcli.Command{
		Name:       "synth",
		ShortUsage: "cartreg synth -patients N -seed S -out DIR [flags]",
		ShortHelp:  "generate a synthetic CAR-T cohort as FHIR transaction Bundles, for demonstrations and load tests",
		LongHelp: "Writes one FHIR R4 transaction Bundle per synthetic patient (patient-000001.json …) to -out:\n" +
			"site, patient, indication, infusion, remission assessments, toxicities and deaths, with outcomes\n" +
			"calibrated to the published CAR-T trials. Load them with `cartreg import DIR`; every entry is a\n" +
			"conditional create, so loading them twice creates nothing. Needs no database.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(_ context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("synth takes no arguments, got %q", args)
			}
			if *out == "" {
				return errors.New("synth needs -out, the directory to write the Bundles to")
			}
			opts := synth.Options{Patients: *patients, Seed: *seed, Sites: *sites}
			// Today's date is the default cut-off: the one place the command reads the clock.
			today := time.Now().UTC()
			opts.AsOf = time.Date(today.Year(), today.Month(), today.Day(), 0, 0, 0, 0, time.UTC)
			var err error
			if *asOf != "" {
				if opts.AsOf, err = time.Parse(time.DateOnly, *asOf); err != nil {
					return fmt.Errorf("-as-of %q: want a date as YYYY-MM-DD", *asOf)
				}
			}
			if *first != "" {
				if opts.FirstInfusion, err = time.Parse(time.DateOnly, *first); err != nil {
					return fmt.Errorf("-first-infusion %q: want a date as YYYY-MM-DD", *first)
				}
			}
			return runSynth(opts, *out, stdout)
		},
	}
}

func runSynth(opts synth.Options, dir string, stdout io.Writer) error {
	cohort, err := synth.Generate(opts)
	if err != nil {
		return err
	}
	if err := cohort.WriteDir(dir); err != nil {
		return err
	}
	byDisease := map[string]int{}
	for _, p := range cohort.Patients {
		byDisease[p.Disease]++
	}
	diseases := make([]string, 0, len(byDisease))
	for d := range byDisease {
		diseases = append(diseases, d)
	}
	// Largest group first; ties alphabetically, so the line is the same every run.
	sort.Slice(diseases, func(i, j int) bool {
		a, b := diseases[i], diseases[j]
		return byDisease[a] > byDisease[b] || (byDisease[a] == byDisease[b] && a < b)
	})
	parts := make([]string, len(diseases))
	for i, d := range diseases {
		parts[i] = fmt.Sprintf("%s %d", d, byDisease[d])
	}
	o := cohort.Options
	fmt.Fprintf(stdout, "wrote %d patients (%d resources, %d sites, infused %s to %s) to %s: %s\n",
		len(cohort.Patients), cohort.Resources(), len(cohort.Sites), o.FirstInfusion.Format(time.DateOnly),
		o.AsOf.Format(time.DateOnly), dir, strings.Join(parts, ", "))
	return nil
}
