package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
)

// IdentityConfig is how people and systems sign in, and how long the audit trail is kept.
type IdentityConfig struct {
	TokenLifetime  time.Duration
	OIDCIssuer     string
	OIDCAudience   string
	OIDCJWKSURL    string
	OIDCRoleClaim  string
	OIDCSiteClaim  string
	OIDCRoles      string // claim value=role pairs, comma-separated
	AuditRetention time.Duration
}

func (c *Config) registerIdentityFlags(fs *flag.FlagSet) {
	id := &c.Identity
	fs.DurationVar(&id.TokenLifetime, "token-lifetime", id.TokenLifetime, "how long the access tokens cartreg issues last (at most 1h)")
	fs.StringVar(&id.OIDCIssuer, "oidc-issuer", id.OIDCIssuer, "the hospital's OpenID Connect provider whose tokens sign people in, e.g. https://login.hospital.example/realms/staff (default: none)")
	fs.StringVar(&id.OIDCAudience, "oidc-audience", id.OIDCAudience, "the audience (client id) the provider's tokens must carry")
	fs.StringVar(&id.OIDCJWKSURL, "oidc-jwks-url", id.OIDCJWKSURL, "the provider's JWK Set (default: discovered from the issuer)")
	fs.StringVar(&id.OIDCRoleClaim, "oidc-role-claim", id.OIDCRoleClaim, `the claim holding a person's roles, e.g. "roles" or "realm_access.roles"`)
	fs.StringVar(&id.OIDCSiteClaim, "oidc-site-claim", id.OIDCSiteClaim, "the claim holding a coordinator's sites (Organization ids)")
	fs.StringVar(&id.OIDCRoles, "oidc-roles", id.OIDCRoles, "claim values and the cartreg role each maps to, e.g. cart-coordinator=coordinator,cart-research=researcher")
	fs.DurationVar(&id.AuditRetention, "audit-retention", id.AuditRetention, "how long audit records are kept (52560h: six years)")
}

// validate checks the identity settings and builds the auth and audit configuration.
func (c *Config) validateIdentity() error {
	id := &c.Identity
	if id.TokenLifetime <= 0 || id.TokenLifetime > time.Hour {
		return fmt.Errorf("-token-lifetime must be between 0 and 1h, got %s", id.TokenLifetime)
	}
	if id.AuditRetention < 24*time.Hour {
		return fmt.Errorf("-audit-retention must be at least a day, got %s", id.AuditRetention)
	}
	c.auth = auth.Config{Issuer: c.issuer(), TokenLifetime: id.TokenLifetime}
	if id.OIDCIssuer == "" {
		if id.OIDCAudience != "" || id.OIDCRoles != "" || id.OIDCRoleClaim != "" {
			return errors.New("-oidc-audience, -oidc-role-claim and -oidc-roles need -oidc-issuer")
		}
		return nil
	}
	if id.OIDCAudience == "" || id.OIDCRoleClaim == "" || id.OIDCRoles == "" {
		return errors.New("-oidc-issuer needs -oidc-audience, -oidc-role-claim and -oidc-roles")
	}
	roles := map[string]auth.Role{}
	for _, pair := range strings.Split(id.OIDCRoles, ",") {
		value, role, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || value == "" || !auth.Role(role).Valid() {
			return fmt.Errorf("-oidc-roles %q: want claim-value=role pairs, roles being ehr, coordinator, researcher or admin", pair)
		}
		roles[value] = auth.Role(role)
	}
	c.auth.OIDC = []auth.OIDCProvider{{Issuer: id.OIDCIssuer, Audience: id.OIDCAudience, JWKSURL: id.OIDCJWKSURL,
		RoleClaim: id.OIDCRoleClaim, SiteClaim: id.OIDCSiteClaim, RoleMap: roles}}
	return nil
}

// issuer is the server's root URL as clients reach it: the base URL without /fhir, else the
// listen address (localhost for every interface).
func (c *Config) issuer() string {
	if c.FHIR.BaseURL != "" {
		return strings.TrimSuffix(strings.TrimSuffix(c.FHIR.BaseURL, "/"), "/fhir")
	}
	scheme := "http"
	if c.HTTP.TLSCert != "" {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(c.HTTP.Addr)
	if err != nil {
		return scheme + "://" + c.HTTP.Addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// withIdentity opens the database and the identity service for a command that manages
// clients, keys or the audit trail.
func withIdentity(ctx context.Context, cfg *Config, stderr io.Writer, fn func(*auth.Service, *database) error) error {
	return withDatabase(ctx, cfg, stderr, func(db *database, logger *slog.Logger) error {
		if err := db.migrate(ctx, logger); err != nil {
			return err
		}
		svc, err := auth.New(ctx, db.pool, cfg.auth, time.Now, logger)
		if err != nil {
			return err
		}
		defer svc.Close()
		return fn(svc, db)
	})
}

// withDatabase runs fn on the configured database, once every setting has been checked, and
// closes the database after it.
func withDatabase(ctx context.Context, cfg *Config, stderr io.Writer, fn func(*database, *slog.Logger) error) error {
	logger, err := cfg.prepare(stderr)
	if err != nil {
		return err
	}
	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer db.close(logger)
	return fn(db, logger)
}

func operatorCommand(name, usage, help string, cfg *Config, fs *flag.FlagSet, exec func(context.Context, []string) error) *ffcli.Command {
	return &ffcli.Command{Name: name, ShortUsage: usage, ShortHelp: help, FlagSet: fs, Options: ffOptions(), Exec: exec}
}

func clientCommand(stdout, stderr io.Writer) *ffcli.Command {
	newFlags := func(name string) (*Config, *flag.FlagSet) {
		cfg := defaultConfig()
		cfg.shareEmbedded = true
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		cfg.registerDatabaseFlags(fs)
		fs.StringVar(&cfg.FHIR.BaseURL, "base-url", cfg.FHIR.BaseURL, "the FHIR base URL clients use (the tokens' issuer is it without /fhir)")
		return &cfg, fs
	}
	addCfg, addFlags := newFlags("add")
	var nc auth.NewClient
	var role, sites, jwksFile string
	var asJSON bool
	addFlags.StringVar(&nc.Name, "name", "", "what the client is, e.g. \"Riverside EHR\" (required)")
	addFlags.StringVar(&role, "role", "", "ehr, coordinator, researcher or admin (required)")
	addFlags.StringVar(&sites, "site", "", "the Organization id(s) a coordinator is limited to, comma-separated")
	addFlags.StringVar(&nc.Scopes, "scope", "", "SMART scopes, space-separated (default: the role's)")
	addFlags.StringVar(&jwksFile, "jwks", "", "a file with the client's public keys as a JWK Set, for private_key_jwt")
	addFlags.StringVar(&nc.JWKSURL, "jwks-url", "", "where the client publishes its JWK Set, for private_key_jwt")
	addFlags.BoolVar(&asJSON, "json", false, "print the client (and its secret) as JSON")
	add := operatorCommand("add", "cartreg client add -name NAME -role ROLE [-site ORG_ID] [-jwks FILE | -jwks-url URL]",
		"register a client; prints its id, and a secret when it has no keys", addCfg, addFlags,
		func(ctx context.Context, args []string) error {
			nc.Role = auth.Role(role)
			if sites != "" {
				nc.Sites = strings.Split(sites, ",")
			}
			if jwksFile != "" {
				raw, err := os.ReadFile(jwksFile)
				if err != nil {
					return fmt.Errorf("-jwks: %w", err)
				}
				nc.JWKS = raw
			}
			return withIdentity(ctx, addCfg, stderr, func(svc *auth.Service, _ *database) error {
				client, secret, err := svc.AddClient(ctx, nc)
				if err != nil {
					return err
				}
				if asJSON {
					out := map[string]any{"client_id": client.ID, "name": client.Name, "role": client.Role,
						"sites": client.Sites, "scope": client.Scopes.String(), "token_endpoint": svc.TokenEndpoint()}
					if secret != "" {
						out["client_secret"] = secret
					}
					return json.NewEncoder(stdout).Encode(out)
				}
				fmt.Fprintf(stdout, "client_id:      %s\n", client.ID)
				if secret != "" {
					fmt.Fprintf(stdout, "client_secret:  %s   (shown once: keep it safe)\n", secret)
				}
				fmt.Fprintf(stdout, "role:           %s\nscope:          %s\ntoken_endpoint: %s\n", client.Role, client.Scopes.String(), svc.TokenEndpoint())
				return nil
			})
		})
	listCfg, listFlags := newFlags("list")
	list := operatorCommand("list", "cartreg client list", "list the registered clients", listCfg, listFlags,
		func(ctx context.Context, args []string) error {
			return withIdentity(ctx, listCfg, stderr, func(svc *auth.Service, _ *database) error {
				clients, err := svc.ListClients(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CLIENT ID\tNAME\tROLE\tSITES\tAUTH\tDISABLED\tCREATED")
				for _, c := range clients {
					method := "private_key_jwt"
					if c.HasSecret {
						method = "client_secret_basic"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", c.ID, c.Name, c.Role, strings.Join(c.Sites, ","), method, c.Disabled, c.Created.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		})
	disableCfg, disableFlags := newFlags("disable")
	disable := operatorCommand("disable", "cartreg client disable CLIENT_ID", "disable a client: its tokens stop working at once", disableCfg, disableFlags,
		func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return errors.New("client disable takes one client id")
			}
			return withIdentity(ctx, disableCfg, stderr, func(svc *auth.Service, _ *database) error {
				if err := svc.DisableClient(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "client %s disabled\n", args[0])
				return nil
			})
		})
	return &ffcli.Command{
		Name:        "client",
		ShortUsage:  "cartreg client add|list|disable [flags]",
		ShortHelp:   "register, list and disable the systems and people that may use the registry",
		Subcommands: []*ffcli.Command{add, list, disable},
		Exec: func(context.Context, []string) error {
			return errors.New("client needs a subcommand: add, list or disable")
		},
	}
}

func tokenCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	fs.StringVar(&cfg.FHIR.BaseURL, "base-url", cfg.FHIR.BaseURL, "the FHIR base URL clients use (the tokens' issuer is it without /fhir)")
	fs.StringVar(&cfg.HTTP.Addr, "addr", cfg.HTTP.Addr, "the server's listen address, when -base-url is not set: the tokens' issuer")
	clientID := fs.String("client", "", "the client to issue a token to (required)")
	scope := fs.String("scope", "", "narrower scopes than the client's (default: all of them)")
	return operatorCommand("token", "cartreg token -client CLIENT_ID [-scope SCOPES]",
		"print an access token for a client, for local use (curl -H \"Authorization: Bearer $(cartreg token -client ID)\")", &cfg, fs,
		func(ctx context.Context, args []string) error {
			if *clientID == "" {
				return errors.New("token needs -client")
			}
			return withIdentity(ctx, &cfg, stderr, func(svc *auth.Service, _ *database) error {
				tok, _, err := svc.IssueToken(ctx, *clientID, *scope)
				if err != nil {
					return err
				}
				fmt.Fprintln(stdout, tok)
				return nil
			})
		})
}

func keysCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("rotate", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	rotate := operatorCommand("rotate", "cartreg keys rotate", "make a new token-signing key; the old one verifies until its tokens expire", &cfg, fs,
		func(ctx context.Context, args []string) error {
			return withIdentity(ctx, &cfg, stderr, func(svc *auth.Service, _ *database) error {
				kid, err := svc.RotateSigningKey(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "new signing key %s\n", kid)
				return nil
			})
		})
	return &ffcli.Command{Name: "keys", ShortUsage: "cartreg keys rotate", ShortHelp: "manage the keys cartreg signs tokens with",
		Subcommands: []*ffcli.Command{rotate},
		Exec:        func(context.Context, []string) error { return errors.New("keys needs a subcommand: rotate") }}
}

func auditCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	verify := operatorCommand("verify", "cartreg audit verify [-json]",
		"check the audit trail's hash chain; exit status 1 if a record was edited, removed or moved", &cfg, fs,
		func(ctx context.Context, args []string) error {
			return withIdentity(ctx, &cfg, stderr, func(_ *auth.Service, db *database) error {
				rep, err := audit.Verify(ctx, db.pool)
				if err != nil {
					return err
				}
				if *asJSON {
					if err := json.NewEncoder(stdout).Encode(rep); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(stdout, "sealed records: %d (from %d), unsealed: %d\nhead: %d %s\n", rep.Sealed, rep.AnchorSeq, rep.Unsealed, rep.LastSeq, rep.LastHash)
				}
				if !rep.OK {
					return fmt.Errorf("the audit trail does not verify at record %d (event %s): %s", rep.BadSeq, rep.BadEventID, rep.Problem)
				}
				fmt.Fprintln(stdout, "the audit trail verifies")
				return nil
			})
		})
	return &ffcli.Command{Name: "audit", ShortUsage: "cartreg audit verify", ShortHelp: "check the audit trail",
		Subcommands: []*ffcli.Command{verify},
		Exec:        func(context.Context, []string) error { return errors.New("audit needs a subcommand: verify") }}
}
