package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Results are one run's figures, as bench/results.json holds them.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Version  string    `json:"version"`
	Machine  Machine   `json:"machine"`
	// Patients is the cohort size (one infusion each); Resources the resources in the
	// database when the searches ran, ResourcesAtStart those the server published itself.
	Patients          int          `json:"patients"`
	ResourcesAtStart  int          `json:"resources_at_start"`
	Resources         int          `json:"resources"`
	Ingest            Ingest       `json:"ingest"`
	SmallTx           Rate         `json:"small_transactions"`
	Read              Rate         `json:"read"`
	ReadAlone         Rate         `json:"read_one_client"`
	SchedulerFirst    SchedulerRun `json:"scheduler_first_run"`
	SchedulerDaily    SchedulerRun `json:"scheduler_daily_run"`
	SearchObservation Search       `json:"search_observation"`
	SearchPatient     Search       `json:"search_patient"`
	Outcomes          []Outcome    `json:"outcomes"`
	Export            Export       `json:"export"`
	ServerPeakRSSMB   float64      `json:"server_peak_rss_mb"`
	// The CPU time of the ingest per resource, of the small transactions per transaction, and
	// of the reads (32 clients) per read.
	IngestCPU  CPU   `json:"ingest_cpu"`
	SmallTxCPU CPU   `json:"small_transactions_cpu"`
	ReadCPU    CPU   `json:"read_cpu"`
	Rows       []Row `json:"table"`
	// Settles are the VACUUM (ANALYZE) and CHECKPOINT run between phases (Results.settle).
	Settles []Settle `json:"settles"`
}

// Settle is one VACUUM (ANALYZE) and CHECKPOINT between phases, and how long it took.
type Settle struct {
	After   string  `json:"after"`
	Seconds float64 `json:"seconds"`
}

// settleLine says in one sentence how the phases were separated.
func (r *Results) settleLine() string {
	if len(r.Settles) == 0 {
		return ""
	}
	parts := make([]string, len(r.Settles))
	for i, s := range r.Settles {
		parts[i] = fmt.Sprintf("%s %.0f s", s.After, s.Seconds)
	}
	return "Between phases the database was vacuumed, analyzed and checkpointed, as after a bulk load: " + strings.Join(parts, ", ") + "."
}

// Row is one line of the table: a figure, its target, what was measured, and whether it met it.
type Row struct {
	Figure   string `json:"figure"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// rows judges the figures against issue 7's targets.
func (r *Results) rows() []Row {
	var maxOutcome float64
	var slowest string
	for _, o := range r.Outcomes {
		if o.MedianMS >= maxOutcome {
			maxOutcome, slowest = o.MedianMS, o.Query
		}
	}
	search := max(r.SearchObservation.P95MS, r.SearchPatient.P95MS)
	var small string
	if r.Resources < 1_000_000 {
		small = " (too few resources to judge: the target is for 1,000,000)"
	}
	first, daily := r.SchedulerFirst, r.SchedulerDaily
	rows := []Row{
		{"ingest, validated and indexed", "≥ 3,000 resources/s",
			fmt.Sprintf("%s resources/s (%s in %.0f s; Bundle median %.0f ms); CPU per resource: server %.2f ms, PostgreSQL %.2f ms", thousands(r.Ingest.ResourcesPerSecond),
				thousands(float64(r.Ingest.Resources)), r.Ingest.Seconds, r.Ingest.MedianMS, r.IngestCPU.ServerMS, r.IngestCPU.PostgresMS),
			r.Ingest.ResourcesPerSecond >= 3000},
		{"small transactions", "≥ 1,000 tx/s, p99 ≤ 50 ms",
			fmt.Sprintf("%s tx/s, median %.1f ms, p99 %.1f ms; CPU per transaction: server %.2f ms, PostgreSQL %.2f ms",
				thousands(r.SmallTx.PerSecond), r.SmallTx.MedianMS, r.SmallTx.P99MS, r.SmallTxCPU.ServerMS, r.SmallTxCPU.PostgresMS),
			r.SmallTx.PerSecond >= 1000 && r.SmallTx.P99MS <= 50},
		{"read by id", "≥ 5,000 req/s, median ≤ 1 ms",
			fmt.Sprintf("%s req/s from 32 clients (median %.1f ms, p99 %.1f ms); one client: median %.2f ms, p99 %.2f ms",
				thousands(r.Read.PerSecond), r.Read.MedianMS, r.Read.P99MS, r.ReadAlone.MedianMS, r.ReadAlone.P99MS),
			r.Read.PerSecond >= 5000 && r.ReadAlone.MedianMS <= 1},
		{fmt.Sprintf("search, %s resources", thousands(float64(r.Resources))), "p95 ≤ 20 ms",
			fmt.Sprintf("Observation median %.1f ms, p95 %.1f ms; Patient median %.1f ms, p95 %.1f ms; CPU per query: server %.2f and %.2f ms, PostgreSQL %.2f and %.2f ms",
				r.SearchObservation.MedianMS, r.SearchObservation.P95MS, r.SearchPatient.MedianMS, r.SearchPatient.P95MS,
				r.SearchObservation.CPU.ServerMS, r.SearchPatient.CPU.ServerMS, r.SearchObservation.CPU.PostgresMS, r.SearchPatient.CPU.PostgresMS) + small,
			search <= 20 && r.Resources >= 1_000_000},
		{fmt.Sprintf("scheduler, daily run, %s infusions", thousands(float64(daily.Infusions))), "≤ 10 s, peak RSS ≤ 300 MB",
			fmt.Sprintf("%.1f s, peak RSS %.0f MB", daily.Seconds, daily.PeakRSSMB),
			daily.Seconds <= 10 && daily.PeakRSSMB <= 300},
		{fmt.Sprintf("scheduler, first run (makes %s Tasks)", thousands(float64(first.Tasks))), "≤ 10 s, peak RSS ≤ 300 MB",
			fmt.Sprintf("%.1f s, peak RSS %.0f MB", first.Seconds, first.PeakRSSMB),
			first.Seconds <= 10 && first.PeakRSSMB <= 300},
		{fmt.Sprintf("outcomes, %s patients", thousands(float64(r.Patients))), "≤ 300 ms",
			fmt.Sprintf("slowest median %.0f ms (%s)", maxOutcome, strings.TrimPrefix(slowest, "/registry/outcomes/")),
			maxOutcome <= 300},
		{fmt.Sprintf("$export of %s resources", thousands(float64(r.Export.Resources))), "server RSS ≤ 300 MB meanwhile",
			fmt.Sprintf("%s resources/s (%.0f s to the manifest, %.0f s to download %d files), peak RSS %.0f MB",
				thousands(r.Export.ResourcesPerSecond), r.Export.Seconds, r.Export.DownloadSeconds, r.Export.Files, r.Export.PeakRSSMB),
			r.Export.PeakRSSMB <= 300},
		{"server peak RSS", "≤ 300 MB", fmt.Sprintf("%.0f MB", r.ServerPeakRSSMB), r.ServerPeakRSSMB <= 300},
	}
	return rows
}

func (r *Results) machineLine() string {
	m := r.Machine
	return fmt.Sprintf("%s, %d cores, %d GiB; %s; %s on the same machine; %s; %s; %s",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.postgresDescription(), m.Go, r.Version, r.Started.Format(time.DateOnly))
}

func printTable(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\n%s\n", r.machineLine())
	if line := r.settleLine(); line != "" {
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tTARGET\tMEASURED\tMET")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.Figure, row.Target, row.Measured, yesNo(row.Met))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, o := range r.Outcomes {
		fmt.Fprintf(w, "  %-60s median %.0f ms\n", o.Query, o.MedianMS)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func writeJSON(path string, r *Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// The README's table lives between these two lines; updateReadme replaces what is between.
const (
	readmeBegin = "<!-- bench:begin (written by make bench) -->"
	readmeEnd   = "<!-- bench:end -->"
)

func updateReadme(path string, r *Results) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := bytes.Index(b, []byte(readmeBegin)), bytes.Index(b, []byte(readmeEnd))
	if begin < 0 || end < begin {
		return fmt.Errorf("%s has no %q … %q section to put the table in", path, readmeBegin, readmeEnd)
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%s\n\n%s.", readmeBegin, r.machineLine())
	if line := r.settleLine(); line != "" {
		t.WriteString(" " + line)
	}
	t.WriteString("\n\n| figure | target | measured | met |\n|---|---|---|---|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&t, "| %s | %s | %s | %s |\n", row.Figure, row.Target, row.Measured, yesNo(row.Met))
	}
	t.WriteString("\n")
	out := append(append(append([]byte{}, b[:begin]...), t.String()...), b[end:]...)
	return os.WriteFile(path, out, 0o644)
}

// thousands formats a figure rounded to a whole number, with thousands separators.
func thousands(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
