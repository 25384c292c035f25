package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SearchRun is the search step measured on its own (-only search), on the database a full
// run left behind (-keep, -work DIR): a change to the search path is compared on the same
// data without ingesting it again, and the server's CPU profile of the searches (-profile)
// shows where a search's time goes outside PostgreSQL.
type SearchRun struct {
	Version           string `json:"version"`
	Resources         int    `json:"resources"`
	Rounds            int    `json:"rounds"`
	SearchObservation Search `json:"search_observation"` // the median round's
	SearchPatient     Search `json:"search_patient"`
	// Each round's medians, in milliseconds, in the order run.
	ObservationMedians []float64 `json:"observation_medians_ms"`
	PatientMedians     []float64 `json:"patient_medians_ms"`
}

// searchOnly restarts the server on a kept run's database and times the two searches,
// -searches queries of each a round, after one round that warms the caches. Its samples are
// the ones a full run takes, found again by posting the same Bundles: every entry is a
// conditional create that matches what the first run made, so nothing is written (a created
// entry stops the run).
func searchOnly(ctx context.Context, o options) (*SearchRun, error) {
	if o.work == "" {
		return nil, fmt.Errorf("-only search needs -work, the folder of a run made with -keep")
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return nil, err
	}
	cohort, err := listCohort(filepath.Join(o.work, "cohort"))
	if err != nil {
		return nil, err
	}
	srv, db, prof, err := serveProfiled(ctx, o, bin, filepath.Join(o.work, "data"), filepath.Join(o.work, "serve-search.log"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	defer db.Close()
	res := &SearchRun{Version: binaryVersion(bin), Rounds: o.rounds}
	if res.Resources, err = countRows(ctx, db, `SELECT count(*) FROM resource WHERE NOT deleted`); err != nil {
		return nil, err
	}
	creds, err := registerClient(ctx, bin, srv.dataDir, srv.base)
	if err != nil {
		return nil, err
	}
	c := newClient(srv.base, 1, creds)
	step("finding the samples again in %d Bundles", len(cohort))
	samples, err := resample(ctx, c, cohort)
	if err != nil {
		return nil, err
	}
	step("warming up: %d queries each", o.searches)
	if _, _, err := searches(ctx, c, srv, samples, o.searches); err != nil {
		return nil, err
	}
	var obs, pat []Search
	done := prof.start(ctx, "search", o.duration)
	for i := 0; i < o.rounds; i++ {
		step("search round %d of %d: %d queries each, on %d resources", i+1, o.rounds, o.searches, res.Resources)
		ob, pa, err := searches(ctx, c, srv, samples, o.searches)
		if err != nil {
			return nil, err
		}
		obs, pat = append(obs, ob), append(pat, pa)
		res.ObservationMedians, res.PatientMedians = append(res.ObservationMedians, ob.MedianMS), append(res.PatientMedians, pa.MedianMS)
	}
	if err := done(); err != nil {
		return nil, err
	}
	res.SearchObservation, res.SearchPatient = medianRound(obs), medianRound(pat)
	return res, nil
}

// medianRound is the round whose median is the median of the rounds' (the lower middle one of
// an even number).
func medianRound(rounds []Search) Search {
	sorted := append([]Search(nil), rounds...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].MedianMS < sorted[j].MedianMS })
	return sorted[(len(sorted)-1)/2]
}

// resample posts the Bundles a full run samples (the same spread, see ingest) to learn their
// patients' ids. Every entry must come back 200, found rather than created.
func resample(ctx context.Context, c *client, files []string) ([]sample, error) {
	var out []sample
	for i := 0; i < len(files); i += sampleEvery(len(files)) {
		body, err := os.ReadFile(files[i])
		if err != nil {
			return nil, err
		}
		raw, err := c.do(ctx, http.MethodPost, "/fhir/", body, http.StatusOK)
		if err != nil {
			return nil, err
		}
		resp, err := parseResponse(raw)
		if err != nil {
			return nil, err
		}
		if made := resp.created(); len(made) > 0 {
			return nil, fmt.Errorf("%s created %s: the database is not the one its cohort was ingested into", filepath.Base(files[i]), strings.Join(made, ", "))
		}
		s, err := sampleOf(body, resp)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(files[i]), err)
		}
		out = append(out, *s)
	}
	return out, nil
}

func printSearchRun(r *SearchRun) {
	fmt.Printf("%s on %d resources, %d rounds of %d queries each (medians of each round, ms)\n",
		r.Version, r.Resources, r.Rounds, r.SearchObservation.Queries)
	show := func(label string, s Search, medians []float64) {
		parts := make([]string, len(medians))
		for i, m := range medians {
			parts[i] = fmt.Sprintf("%.2f", m)
		}
		fmt.Printf("%-12s median %.2f ms, p95 %.2f ms, CPU per query: server %.3f ms, PostgreSQL %.3f ms (median round); rounds: %s\n",
			label, s.MedianMS, s.P95MS, s.CPU.ServerMS, s.CPU.PostgresMS, strings.Join(parts, " "))
	}
	show("Observation", r.SearchObservation, r.ObservationMedians)
	show("Patient", r.SearchPatient, r.PatientMedians)
}
