package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/robfig/cron/v3"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/registry"
)

// FollowUpConfig is how the follow-up scheduler and its digests are set up.
type FollowUpConfig struct {
	Schedule string // cron spec of the scheduled run
	TimeZone string // of the spec, and of the calendar days windows are counted in
	LeadDays int
	// CalendarOverdueDays is how late a visit may be and still show across its window in the
	// calendar feed; later, it shows on today.
	CalendarOverdueDays int
	Coordinators        string // site=owner pairs, see followup.ParseOwners
	DigestWebhook       string
	DigestEmail         bool
	DeliveryInterval    time.Duration
	// DeliveryRetention is how long delivered messages are kept (for an operator to look
	// at) before their bodies, which carry patient data, are deleted.
	DeliveryRetention time.Duration
	SMTP              outbox.SMTPConfig
	SMTPPasswordFile  string

	location *time.Location
	owners   map[string]string
}

func defaultFollowUp() FollowUpConfig {
	return FollowUpConfig{Schedule: "30 5 * * *", TimeZone: "UTC", LeadDays: 14, CalendarOverdueDays: followup.DefaultCalendarOverdueDays, DeliveryInterval: 30 * time.Second, DeliveryRetention: 30 * 24 * time.Hour,
		SMTP: outbox.SMTPConfig{TLS: outbox.TLSStartTLS}}
}

// registerFollowUpFlags are the settings every command that writes needs: writes close Tasks.
func (c *Config) registerFollowUpFlags(fs *flag.FlagSet) {
	f := &c.FollowUp
	fs.StringVar(&f.TimeZone, "follow-up-time-zone", f.TimeZone, "time zone of -follow-up-schedule and of the days follow-up windows are counted in (IANA name, e.g. Europe/Berlin)")
	fs.IntVar(&f.LeadDays, "follow-up-lead-days", f.LeadDays, "days before a visit window opens that its Task is made")
	fs.StringVar(&f.Coordinators, "follow-up-coordinators", f.Coordinators,
		"who owns each site's follow-up Tasks: ORG_ID=Practitioner/ID pairs, comma-separated (default: the site Organization)")
}

// registerScheduleFlags are the settings of the scheduled run and its deliveries, for serve.
func (c *Config) registerScheduleFlags(fs *flag.FlagSet) {
	f := &c.FollowUp
	fs.StringVar(&f.Schedule, "follow-up-schedule", f.Schedule, `when the follow-up scheduler runs: a cron spec ("30 5 * * *") or "@daily"; "off" to run it only with cartreg schedule run`)
	fs.IntVar(&f.CalendarOverdueDays, "calendar-overdue-days", f.CalendarOverdueDays,
		"a visit overdue by more than this many days shows in the work list's calendar feed once, on today, instead of across its long-past window")
	fs.StringVar(&f.DigestWebhook, "digest-webhook", f.DigestWebhook, "URL that receives each coordinator's digest of new and newly overdue Tasks as a FHIR Bundle, after every run")
	fs.BoolVar(&f.DigestEmail, "digest-email", f.DigestEmail, "also e-mail each coordinator their digest, to the e-mail telecom of their Practitioner (needs -smtp-host)")
	fs.DurationVar(&f.DeliveryInterval, "delivery-interval", f.DeliveryInterval, "how often queued digests and Subscription notifications are (re)tried")
	fs.DurationVar(&f.DeliveryRetention, "delivery-retention", f.DeliveryRetention, "how long delivered digests and notifications are kept before they are deleted (720h: 30 days)")
	fs.StringVar(&f.SMTP.Host, "smtp-host", f.SMTP.Host, "SMTP server for e-mail digests")
	fs.IntVar(&f.SMTP.Port, "smtp-port", f.SMTP.Port, "SMTP port (default: 587 for starttls, 465 for tls, 25 for none)")
	fs.StringVar(&f.SMTP.Username, "smtp-username", f.SMTP.Username, "SMTP AUTH user name")
	fs.StringVar(&f.SMTPPasswordFile, "smtp-password-file", f.SMTPPasswordFile, "file holding the SMTP AUTH password")
	fs.StringVar(&f.SMTP.From, "smtp-from", f.SMTP.From, `sender of e-mail digests, e.g. "CAR-T registry <registry@hospital.example>"`)
	fs.StringVar(&f.SMTP.TLS, "smtp-tls", f.SMTP.TLS, "none, starttls or tls")
}

// resolve checks the follow-up settings and reads what they point at.
func (f *FollowUpConfig) resolve() error {
	loc, err := time.LoadLocation(f.TimeZone)
	if err != nil {
		return fmt.Errorf("-follow-up-time-zone %q: %w", f.TimeZone, err)
	}
	f.location = loc
	if f.Schedule != "off" {
		if _, err := cron.ParseStandard(f.Schedule); err != nil {
			return fmt.Errorf("-follow-up-schedule %q: %w", f.Schedule, err)
		}
	}
	if f.LeadDays < 0 {
		return fmt.Errorf("-follow-up-lead-days must not be negative, got %d", f.LeadDays)
	}
	if f.CalendarOverdueDays < 1 {
		return fmt.Errorf("-calendar-overdue-days must be at least 1, got %d", f.CalendarOverdueDays)
	}
	if f.owners, err = followup.ParseOwners(f.Coordinators); err != nil {
		return fmt.Errorf("-follow-up-coordinators: %w", err)
	}
	if f.SMTPPasswordFile != "" {
		raw, err := os.ReadFile(f.SMTPPasswordFile)
		if err != nil {
			return fmt.Errorf("-smtp-password-file: %w", err)
		}
		f.SMTP.Password = strings.TrimSpace(string(raw))
	}
	if err := f.SMTP.Validate(); err != nil {
		return err
	}
	if f.DigestEmail && f.SMTP.Host == "" {
		return fmt.Errorf("-digest-email needs -smtp-host")
	}
	if f.DeliveryInterval <= 0 || f.DeliveryRetention <= 0 {
		return fmt.Errorf("-delivery-interval (%s) and -delivery-retention (%s) must be positive", f.DeliveryInterval, f.DeliveryRetention)
	}
	return nil
}

func (f *FollowUpConfig) tracker() followup.Config {
	return followup.Config{LeadDays: f.LeadDays, Owners: f.owners, Location: f.location, CalendarOverdueDays: f.CalendarOverdueDays}
}

func (f *FollowUpConfig) digests(baseURL string) followup.DigestConfig {
	return followup.DigestConfig{Webhook: f.DigestWebhook, Email: f.DigestEmail, BaseURL: baseURL}
}

func (f *FollowUpConfig) outbox() outbox.Config { return outbox.Config{SMTP: f.SMTP} }

func scheduleCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	cfg.registerRegistryFlags(fs)
	cfg.registerScheduleFlags(fs)
	fs.StringVar(&cfg.FHIR.BaseURL, "base-url", cfg.FHIR.BaseURL, "the FHIR base URL digests' fullUrls are made from")
	var opts runOptions
	fs.StringVar(&opts.at, "at", "", "the time the run stands for, RFC 3339 (2027-03-01T06:00:00Z) or a date; default now: it sets the clock for the run")
	fs.BoolVar(&opts.dryRun, "dry-run", false, "print what the run would create, change and cancel, and the digests it would queue; write nothing")
	fs.BoolVar(&opts.force, "force", false, "allow an -at later than now: the Tasks it writes are permanent, as if that time had come")
	run := &ffcli.Command{
		Name:       "run",
		ShortUsage: "cartreg schedule run [-at TIME] [-dry-run] [-force] [flags]",
		ShortHelp:  "run the follow-up scheduler once, now or as of -at, and queue its digests",
		LongHelp: "Brings every follow-up Task up to date as of -at (default now) in the database the usual\n" +
			"settings name, then queues each coordinator's digest. It takes the same lock as the scheduled\n" +
			"run, so it waits for no one and runs alongside none: if a replica is running the job, it says so.\n" +
			"With -dry-run it prints each Task it would create or change and the digests that would follow,\n" +
			"in a read-only transaction. An -at later than now is refused without -force (or -dry-run):\n" +
			"Tasks written as of a future day stay, overdue before their time.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("schedule run takes no arguments, got %q", args)
			}
			return runScheduleOnce(ctx, &cfg, opts, stdout, stderr)
		},
	}
	return &ffcli.Command{
		Name:        "schedule",
		ShortUsage:  "cartreg schedule run|deliveries [flags]",
		ShortHelp:   "run scheduled work by hand, and see what it has sent",
		Subcommands: []*ffcli.Command{run, deliveriesCommand(stdout, stderr)},
		Exec: func(context.Context, []string) error {
			return fmt.Errorf("want a subcommand: cartreg schedule run, or cartreg schedule deliveries")
		},
	}
}

func deliveriesCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("deliveries", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	var f outbox.Filter
	fs.StringVar((*string)(&f.State), "state", "", "pending, delivered or failed (default: all)")
	fs.StringVar(&f.Kind, "kind", "", "digest or subscription (default: all)")
	fs.IntVar(&f.Limit, "limit", 100, "the most messages listed, newest first")
	return &ffcli.Command{
		Name:       "deliveries",
		ShortUsage: "cartreg schedule deliveries [-state failed] [-kind digest] [flags]",
		ShortHelp:  "list queued, delivered and given-up digests and Subscription notifications, newest first",
		LongHelp: "Lists the delivery outbox: what each message is, where it goes (a webhook's host and path,\n" +
			"never its credentials), how many attempts it has had and the last error. Bodies, which carry\n" +
			"patient data, are never shown.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("schedule deliveries takes no arguments, got %q", args)
			}
			return withDatabase(ctx, &cfg, stderr, func(db *database, _ *slog.Logger) error {
				list, err := outbox.List(ctx, db.pool, f)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "STATE\tKIND\tCHANNEL\tTARGET\tATTEMPTS\tCREATED\tLAST ERROR\tKEY")
				for _, m := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.State, m.Kind, m.Channel, m.Target, m.Attempts,
						m.CreatedAt.UTC().Format(time.RFC3339), m.LastError, m.Key)
				}
				return tw.Flush()
			})
		},
	}
}

func parseAt(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("-at %q: want RFC 3339 (2027-03-01T06:00:00Z) or a date (2027-03-01)", s)
}

// runOptions are schedule run's own flags.
type runOptions struct {
	at            string
	dryRun, force bool
}

func runScheduleOnce(ctx context.Context, cfg *Config, opts runOptions, stdout, stderr io.Writer) error {
	now := time.Now()
	at, err := parseAt(opts.at, now)
	if err != nil {
		return err
	}
	if at.After(now) && !opts.force && !opts.dryRun {
		return fmt.Errorf("-at %s is later than now (%s): the Tasks a run writes stay, dated and overdue as if that time "+
			"had come; see what it would do with -dry-run, or give -force to run it anyway", at.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if opts.dryRun {
		return previewSchedule(ctx, cfg, at, stdout, stderr)
	}
	// The run's clock: Tasks are dated, and windows counted, as of -at.
	ctx = asOperator(ctx, "schedule run")
	a, db, logger, err := openApp(ctx, cfg, func() time.Time { return at }, stderr)
	if err != nil {
		return err
	}
	defer db.close(logger)
	defer a.Close(context.WithoutCancel(ctx))
	ran, err := a.Scheduler().RunSlot(ctx, a.FollowUpJob(), at)
	if err != nil {
		return err
	}
	if !ran {
		fmt.Fprintf(stdout, "follow-up run for %s not started: another process is running it, or it has run for that time already\n", at.Format(time.RFC3339))
		return nil
	}
	// Counted as the Tasks' current versions say: a coordinator's hold or failure is theirs.
	tally, err := a.FollowUp.Tally(ctx, db.pool, at)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "follow-up run as of %s: %d Tasks, %d open, %d overdue\n", at.Format(time.RFC3339), tally.Tasks, tally.Open, tally.Overdue)
	// One delivery pass, so digests reach a receiver that is up without a server running;
	// those it cannot deliver wait for a server's deliverer.
	pass, err := a.Deliverer().DeliverDue(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deliveries: %d delivered, %d to retry, %d given up\n", pass.Delivered, pass.Retrying, pass.Failed)
	return nil
}

// previewSchedule is schedule run -dry-run: what a run as of at would write, worked out in a
// read-only transaction on a database it neither migrates nor publishes definitions to, so
// that nothing at all is written.
func previewSchedule(ctx context.Context, cfg *Config, at time.Time, stdout, stderr io.Writer) error {
	return withDatabase(ctx, cfg, stderr, func(db *database, logger *slog.Logger) error {
		st, err := migrations.GetStatus(ctx, db.pool)
		if err != nil {
			return err
		}
		if err := st.Check(); err != nil {
			return fmt.Errorf("-dry-run needs a current schema, and writes none (run cartreg migrate up first): %w", err)
		}
		clock := func() time.Time { return at }
		store := fhir.NewStore(db.pool, searchparam.Default(), clock)
		reg, err := registry.New(cfg.Registry, db.pool, store, clock, logger)
		if err != nil {
			return err
		}
		tracker := followup.New(cfg.FollowUp.tracker(), store, reg.Plan())
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(stdout, "dry run: the follow-up run as of %s would write these Tasks (nothing is written)\n\n", at.Format(time.RFC3339))
		fmt.Fprintln(tw, "CHANGE\tTASK\tPATIENT\tMILESTONE\tWINDOW\tFROM\tTO\tOWNER")
		var preview *followup.Preview
		err = pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var err error
			preview, err = tracker.Preview(ctx, tx, at, func(c followup.Change) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s..%s\t%s\t%s\t%s\n", c.Kind, cmp.Or(c.TaskID, "(new)"), c.Patient, c.Milestone,
					c.WindowOpen, c.WindowEnd, cmp.Or(c.From, "-"), c.To, cmp.Or(c.Owner, "-"))
			})
			return err
		})
		if err != nil {
			return err
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nwould write: %s\n", preview.Summary)
		f := &cfg.FollowUp
		var channels []string
		if f.DigestWebhook != "" {
			channels = append(channels, "webhook")
		}
		if f.DigestEmail {
			channels = append(channels, "e-mail")
		}
		sent := "not sent: no -digest-webhook or -digest-email, so the notices are only marked as told"
		if len(channels) > 0 {
			sent = "by " + strings.Join(channels, " and ")
		}
		fmt.Fprintf(stdout, "digests (%s):\n", sent)
		if len(preview.Digests) == 0 {
			fmt.Fprintln(stdout, "  none")
		}
		for _, d := range preview.Digests {
			fmt.Fprintf(stdout, "  %s: %d Tasks (%d new, %d newly overdue, %d waiting from earlier runs)\n",
				d.Owner, d.New+d.Overdue+d.Pending, d.New, d.Overdue, d.Pending)
		}
		return nil
	})
}
