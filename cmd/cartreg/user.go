package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/web"
)

func (c *Config) registerWebFlags(fs *flag.FlagSet) {
	w := &c.Web
	fs.DurationVar(&w.SessionIdleTimeout, "session-idle-timeout", w.SessionIdleTimeout, "a web page session unused this long is ended (sign in again)")
	fs.DurationVar(&w.SessionLifetime, "session-lifetime", w.SessionLifetime, "a web page session ends this long after sign-in, however busy")
	fs.IntVar(&w.SignInAttempts, "signin-attempts", w.SignInAttempts, "failed sign-ins allowed per name, and per address, in -signin-window; then 429 until it passes")
	fs.DurationVar(&w.SignInWindow, "signin-window", w.SignInWindow, "the window -signin-attempts counts in")
	fs.IntVar(&w.WorkListPageSize, "worklist-page-size", w.WorkListPageSize, "visits on one page of the web work list (1 to 1000)")
	fs.IntVar(&w.WorkListSearchMax, "worklist-search-max", w.WorkListSearchMax, "patients a word of a work-list search by name or MRN may find before it asks for more of the word (1 to 100000)")
	o := &c.WebOIDC
	fs.BoolVar(&o.Enabled, "web-oidc", o.Enabled, "offer -oidc-issuer's sign-in on the pages' sign-in page (the authorization code flow); false offers passwords only")
	fs.StringVar(&o.ClientID, "web-oidc-client-id", o.ClientID, "the client id cartreg's pages are registered with at the provider (default: -oidc-audience)")
	fs.StringVar(&o.ClientSecretFile, "web-oidc-client-secret-file", o.ClientSecretFile, "file holding that client's secret (default: none, a public client protected by PKCE)")
	fs.StringVar(&w.OIDC.Name, "web-oidc-name", w.OIDC.Name, `how the sign-in page names the provider, "Sign in with NAME" (default: the issuer's host name)`)
	fs.DurationVar(&w.OIDC.Timeout, "web-oidc-signin-timeout", w.OIDC.Timeout, "how long a person may take at the provider before the sign-in is refused (at most 1h)")
}

// WebOIDCConfig is how the pages offer the OpenID Connect provider (-oidc-issuer) to people.
type WebOIDCConfig struct {
	Enabled          bool
	ClientID         string
	ClientSecretFile string
}

// validateWeb refuses settings that would read as "no limit".
func (c *Config) validateWeb() error {
	w := c.Web
	if w.SessionIdleTimeout <= 0 || w.SessionLifetime <= 0 || w.SessionIdleTimeout > w.SessionLifetime {
		return fmt.Errorf("want 0 < -session-idle-timeout (%s) <= -session-lifetime (%s)", w.SessionIdleTimeout, w.SessionLifetime)
	}
	if w.SignInAttempts < 1 || w.SignInWindow <= 0 {
		return fmt.Errorf("-signin-attempts (%d) must be at least 1 and -signin-window (%s) positive", w.SignInAttempts, w.SignInWindow)
	}
	if w.WorkListPageSize < 1 || w.WorkListPageSize > 1000 {
		return fmt.Errorf("-worklist-page-size (%d) must be from 1 to 1000", w.WorkListPageSize)
	}
	if w.WorkListSearchMax < 1 || w.WorkListSearchMax > 100000 {
		return fmt.Errorf("-worklist-search-max (%d) must be from 1 to 100000", w.WorkListSearchMax)
	}
	if w.OIDC.Timeout <= 0 || w.OIDC.Timeout > time.Hour {
		return fmt.Errorf("-web-oidc-signin-timeout (%s) must be positive and at most 1h", w.OIDC.Timeout)
	}
	o := c.WebOIDC
	if !o.Enabled || c.Identity.OIDCIssuer == "" {
		if o.ClientID != "" || o.ClientSecretFile != "" {
			return errors.New("-web-oidc-client-id and -web-oidc-client-secret-file need -oidc-issuer and -web-oidc")
		}
		c.Web.OIDC.Issuer = ""
		return nil
	}
	c.Web.OIDC.Issuer, c.Web.OIDC.ClientID = c.Identity.OIDCIssuer, o.ClientID
	if c.Web.OIDC.ClientID == "" {
		c.Web.OIDC.ClientID = c.Identity.OIDCAudience
	}
	if o.ClientSecretFile != "" {
		raw, err := os.ReadFile(o.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("-web-oidc-client-secret-file: %w", err)
		}
		if c.Web.OIDC.ClientSecret = strings.TrimSpace(string(raw)); c.Web.OIDC.ClientSecret == "" {
			return fmt.Errorf("-web-oidc-client-secret-file %s is empty", o.ClientSecretFile)
		}
	}
	return nil
}

// withUsers opens the configured database, migrated, for a command that manages people.
func withUsers(ctx context.Context, cfg *Config, stderr io.Writer, fn func(*web.Users) error) error {
	return withDatabase(ctx, cfg, stderr, func(db *database, logger *slog.Logger) error {
		if err := db.migrate(ctx, logger); err != nil {
			return err
		}
		return fn(web.NewUsers(db.pool, time.Now))
	})
}

// userCommand manages the people who sign in to the web pages with a password.
func userCommand(stdin io.Reader, stdout, stderr io.Writer) *ffcli.Command {
	newFlags := func(name string) (*Config, *flag.FlagSet) {
		cfg := defaultConfig()
		cfg.shareEmbedded = true
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		cfg.registerDatabaseFlags(fs)
		return &cfg, fs
	}
	addCfg, addFlags := newFlags("add")
	var nu web.NewUser
	var role, sites string
	var fromStdin bool
	addFlags.StringVar(&nu.Name, "name", "", "what they sign in with, e.g. alice (required)")
	addFlags.StringVar(&nu.DisplayName, "display-name", "", "their name as pages show it (default: -name)")
	addFlags.StringVar(&role, "role", "", "coordinator, researcher or admin (required)")
	addFlags.StringVar(&sites, "site", "", "the Organization id(s) a coordinator works for, comma-separated")
	addFlags.BoolVar(&fromStdin, "password-stdin", false, fmt.Sprintf("read the password from the first line of standard input (at least %d characters); otherwise one is made and printed", web.MinPasswordLength))
	add := operatorCommand("add", "cartreg user add -name NAME -role ROLE [-site ORG_ID] [-password-stdin]",
		"add a person who signs in to the web pages; prints a password unless given one", addCfg, addFlags,
		func(ctx context.Context, args []string) error {
			nu.Role = auth.Role(role)
			if sites != "" {
				for _, s := range strings.Split(sites, ",") {
					nu.Sites = append(nu.Sites, strings.TrimPrefix(strings.TrimSpace(s), "Organization/"))
				}
			}
			if fromStdin {
				line, err := bufio.NewReader(stdin).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("-password-stdin: %w", err)
				}
				if nu.Password = strings.TrimRight(line, "\r\n"); nu.Password == "" {
					return errors.New("-password-stdin: standard input held no password")
				}
			}
			return withUsers(ctx, addCfg, stderr, func(us *web.Users) error {
				u, password, err := us.AddUser(ctx, nu)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "user:     %s\nrole:     %s\n", u.Name, u.Role)
				if len(u.Sites) > 0 {
					fmt.Fprintf(stdout, "sites:    %s\n", strings.Join(u.Sites, ", "))
				}
				if password != "" {
					fmt.Fprintf(stdout, "password: %s   (shown once: give it to them safely)\n", password)
				}
				return nil
			})
		})
	listCfg, listFlags := newFlags("list")
	list := operatorCommand("list", "cartreg user list", "list the people who may sign in to the web pages", listCfg, listFlags,
		func(ctx context.Context, args []string) error {
			return withUsers(ctx, listCfg, stderr, func(us *web.Users) error {
				users, err := us.ListUsers(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tDISPLAY NAME\tROLE\tSITES\tDISABLED\tCREATED")
				for _, u := range users {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", u.Name, u.DisplayName, u.Role, strings.Join(u.Sites, ","), u.Disabled, u.Created.UTC().Format(time.DateOnly))
				}
				return tw.Flush()
			})
		})
	disableCfg, disableFlags := newFlags("disable")
	disable := operatorCommand("disable", "cartreg user disable NAME", "sign a person out everywhere and refuse them from now on", disableCfg, disableFlags,
		func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return errors.New("user disable takes one name")
			}
			return withUsers(ctx, disableCfg, stderr, func(us *web.Users) error { return us.DisableUser(ctx, args[0]) })
		})
	return &ffcli.Command{Name: "user", ShortUsage: "cartreg user add|list|disable", ShortHelp: "manage the people who sign in to the web pages",
		Subcommands: []*ffcli.Command{add, list, disable},
		Exec: func(context.Context, []string) error {
			return errors.New("user needs a subcommand: add, list or disable")
		}}
}
