// Command cartreg is the CAR-T outcomes registry: a FHIR R4 server, the registry's outcome
// queries and the follow-up scheduler, in one binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/server"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cartreg:", err)
		os.Exit(1)
	}
}

// run is the whole program, given its arguments and outputs.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := commands(stdout, stderr)
	if err := root.Parse(args); err != nil {
		return err
	}
	return root.Run(ctx)
}

func commands(stdout, stderr io.Writer) *ffcli.Command {
	root := &ffcli.Command{
		Name:       "cartreg",
		ShortUsage: "cartreg <command> [flags]",
		LongHelp: "cartreg is a FHIR R4 outcomes registry and follow-up tracker for CAR-T cell therapy.\n" +
			"Every flag can also be set as a CARTREG_* environment variable: -database-url is CARTREG_DATABASE_URL.",
		FlagSet: flag.NewFlagSet("cartreg", flag.ContinueOnError),
	}
	serve := serveCommand(stderr)
	migrate := migrateCommand(stdout, stderr)
	versionCmd := &ffcli.Command{
		Name:       "version",
		ShortUsage: "cartreg version",
		ShortHelp:  "print the version of cartreg and what it was built with",
		Exec: func(context.Context, []string) error {
			printVersion(stdout)
			return nil
		},
	}
	help := &ffcli.Command{
		Name:       "help",
		ShortUsage: "cartreg help [command]",
		ShortHelp:  "explain a command and its flags",
	}
	root.Subcommands = []*ffcli.Command{serve, migrate, importCommand(stdout, stderr), demoCommand(stdout, stderr), scheduleCommand(stdout, stderr),
		clientCommand(stdout, stderr), userCommand(os.Stdin, stdout, stderr), tokenCommand(stdout, stderr), keysCommand(stdout, stderr), auditCommand(stdout, stderr),
		synthCommand(stdout), versionCmd, help}
	var nested []*ffcli.Command
	for _, c := range root.Subcommands {
		nested = append(nested, c.Subcommands...)
	}
	for _, c := range append(root.Subcommands, nested...) {
		if c.FlagSet == nil {
			c.FlagSet = flag.NewFlagSet(c.Name, flag.ContinueOnError)
		}
		c.FlagSet.SetOutput(stderr)
	}
	root.FlagSet.SetOutput(stderr)

	root.Exec = func(_ context.Context, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q; see `cartreg help`", args[0])
		}
		fmt.Fprintln(stderr, ffcli.DefaultUsageFunc(root))
		return flag.ErrHelp
	}
	help.Exec = func(_ context.Context, args []string) error {
		target := root
		for _, name := range args {
			next := findCommand(target.Subcommands, name)
			if next == nil {
				return fmt.Errorf("no help for %q: not a command", strings.Join(args, " "))
			}
			target = next
		}
		fmt.Fprintln(stdout, ffcli.DefaultUsageFunc(target))
		return nil
	}
	return root
}

func findCommand(cmds []*ffcli.Command, name string) *ffcli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func serveCommand(stderr io.Writer) *ffcli.Command {
	cmd, _ := newServeCommand(stderr)
	return cmd
}

// newServeCommand returns the serve command and the Config its parsing fills in.
func newServeCommand(stderr io.Writer) (*ffcli.Command, *Config) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.registerServeFlags(fs)
	return &ffcli.Command{
		Name:       "serve",
		ShortUsage: "cartreg serve [flags]",
		ShortHelp:  "run the HTTP server (on the embedded database unless -database-url is set)",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return serve(ctx, &cfg, stderr)
		},
	}, &cfg
}

func serve(ctx context.Context, cfg *Config, stderr io.Writer) error {
	logger, err := cfg.prepare(stderr)
	if err != nil {
		return err
	}
	logger.Info("starting cartreg", "version", version)

	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer db.close(logger) // after the server has drained: requests may still need it
	if cfg.Migrate {
		if err := db.migrate(ctx, logger); err != nil {
			return err
		}
	} else {
		st, err := migrations.GetStatus(ctx, db.pool)
		if err != nil {
			return err
		}
		if err := st.Check(); err != nil {
			return fmt.Errorf("refusing to serve (started with -migrate=false): %w", err)
		}
	}

	serveCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	databaseDied := make(chan struct{})
	go func() {
		select {
		case <-db.stopped():
			logger.Error("the embedded database exited unexpectedly; shutting down")
			close(databaseDied)
			cancel()
		case <-serveCtx.Done():
		}
	}()
	srv := server.New(cfg.HTTP, logger, db.pool)
	a, err := app.New(ctx, cfg.appConfig(), db.pool, time.Now, logger)
	if err != nil {
		return err
	}
	defer a.Close(context.WithoutCancel(ctx)) // before the database closes: it flushes the audit records
	a.Routes(srv.Echo)
	stopSchedules := a.StartJobs(serveCtx)
	if cfg.DebugAddr != "" {
		stopDebug, err := serveDebug(cfg.DebugAddr, logger)
		if err != nil {
			stopSchedules()
			return err
		}
		defer stopDebug()
	}
	err = srv.Run(serveCtx)
	stopSchedules()
	if err != nil {
		return err
	}
	select {
	case <-databaseDied:
		return errors.New("the embedded database exited unexpectedly; see postgres.log in the data directory")
	default:
	}
	logger.Info("HTTP server stopped")
	return nil
}

func migrateCommand(stdout, stderr io.Writer) *ffcli.Command {
	upCfg, statusCfg := defaultConfig(), defaultConfig()
	upCfg.shareEmbedded, statusCfg.shareEmbedded = true, true
	upFlags, statusFlags := flag.NewFlagSet("up", flag.ContinueOnError), flag.NewFlagSet("status", flag.ContinueOnError)
	upCfg.registerDatabaseFlags(upFlags)
	statusCfg.registerDatabaseFlags(statusFlags)
	var statusJSON bool
	statusFlags.BoolVar(&statusJSON, "json", false, "print the status as JSON")

	onDatabase := func(ctx context.Context, cfg *Config, fn func(*database) error) error {
		return withDatabase(ctx, cfg, stderr, func(db *database, _ *slog.Logger) error { return fn(db) })
	}
	up := &ffcli.Command{
		Name:       "up",
		ShortUsage: "cartreg migrate up [flags]",
		ShortHelp:  "apply every pending migration",
		FlagSet:    upFlags,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return onDatabase(ctx, &upCfg, func(db *database) error {
				logger, _ := upCfg.newLogger(stderr)
				return db.migrate(ctx, logger)
			})
		},
	}
	status := &ffcli.Command{
		Name:       "status",
		ShortUsage: "cartreg migrate status [flags]",
		ShortHelp:  "show the schema version and pending migrations; exit status 1 if any are pending",
		FlagSet:    statusFlags,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return onDatabase(ctx, &statusCfg, func(db *database) error {
				st, err := migrations.GetStatus(ctx, db.pool)
				if err != nil {
					return err
				}
				if statusJSON {
					enc := json.NewEncoder(stdout)
					enc.SetIndent("", "  ")
					if err := enc.Encode(st); err != nil {
						return err
					}
				} else {
					w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintf(w, "schema version:\t%d\nlatest:\t%d\n", st.Current, st.Latest)
					for _, p := range st.Pending {
						fmt.Fprintf(w, "pending:\t%s\n", p)
					}
					w.Flush()
				}
				return st.Check()
			})
		},
	}
	return &ffcli.Command{
		Name:        "migrate",
		ShortUsage:  "cartreg migrate <up|status> [flags]",
		ShortHelp:   "apply or inspect database migrations",
		Subcommands: []*ffcli.Command{up, status},
		Exec: func(context.Context, []string) error {
			return errors.New("migrate needs a subcommand: up or status")
		},
	}
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "cartreg %s\n", version)
	fmt.Fprintf(w, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintln(w, "FHIR R4 (4.0.1)")
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/google/fhir/go" {
				fmt.Fprintf(w, "google/fhir %s\n", dep.Version)
			}
		}
	}
	if names, err := migrations.Names(); err == nil {
		fmt.Fprintf(w, "schema version %d\n", len(names))
	}
}
