// Package server is cartreg's HTTP front door: the echo instance, the middleware every request
// passes through, the health endpoints, and the one place where errors become responses.
// The FHIR API, the registry and the work lists register their routes on it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/labstack/gommon/bytes"
)

// Config holds the HTTP settings.
type Config struct {
	Addr              string        // listen address, e.g. ":8080"
	MaxBodySize       string        // largest request body, e.g. "64M"
	ReadHeaderTimeout time.Duration // to receive the request headers
	ReadTimeout       time.Duration // to receive a whole request, body included
	WriteTimeout      time.Duration // from the end of the headers to the end of the response
	IdleTimeout       time.Duration // a kept-alive connection waiting for its next request
	ShutdownTimeout   time.Duration // for in-flight requests to finish after a stop signal
	// TrustedProxies are the IP addresses or CIDR ranges (comma-separated) whose
	// X-Forwarded-* headers are believed; every other client's are dropped.
	TrustedProxies string
	// CORSOrigins are the browser origins (comma-separated) allowed to call the API; none by
	// default.
	CORSOrigins string
	// TLSCert and TLSKey, both set, serve HTTPS with this certificate and key (PEM files).
	TLSCert, TLSKey string
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("listen address %q: %w", c.Addr, err)
	}
	if n, err := bytes.Parse(c.MaxBodySize); err != nil || n <= 0 {
		return fmt.Errorf("max body size %q: want a size such as 64M", c.MaxBodySize)
	}
	if _, err := ParseProxies(c.TrustedProxies); err != nil {
		return err
	}
	if _, err := ParseOrigins(c.CORSOrigins); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS needs both a certificate and a key file")
	}
	for name, d := range map[string]time.Duration{
		"read header timeout": c.ReadHeaderTimeout, "read timeout": c.ReadTimeout,
		"write timeout": c.WriteTimeout, "idle timeout": c.IdleTimeout, "shutdown timeout": c.ShutdownTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	return nil
}

// Server is the HTTP server. Add routes through Echo before calling Run.
type Server struct {
	Echo   *echo.Echo
	config Config
	logger *slog.Logger
	db     *pgxpool.Pool
	// host is the address the server is reached at, which replaces clients' Host headers;
	// set by Serve from its listener, empty (the request's own) under a test's httptest.
	host string
}

// New builds the server with its middleware, error handling and health endpoints.
func New(cfg Config, logger *slog.Logger, db *pgxpool.Pool) *Server {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{Echo: e, config: cfg, logger: logger, db: db}
	e.HTTPErrorHandler = s.handleError
	// Settings were validated: these cannot fail here.
	proxies, _ := ParseProxies(cfg.TrustedProxies)
	origins, _ := ParseOrigins(cfg.CORSOrigins)
	e.IPExtractor = echo.ExtractIPDirect()
	if len(proxies) > 0 {
		var trust []echo.TrustOption
		for _, p := range proxies {
			trust = append(trust, echo.TrustIPRange(p))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(trust...)
	}
	e.Pre(
		trustHost(&s.host, proxies),
		// Real FHIR clients send /fhir/ and /fhir/Patient/: treat them as /fhir and /fhir/Patient.
		middleware.RemoveTrailingSlash(),
	)
	e.Use(
		assignRequestID,
		secureHeaders,
		cors(origins),
		s.logRequests(),
		middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: s.logPanic}),
		markBodyErrors,
		middleware.BodyLimit(cfg.MaxBodySize),
	)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	return s
}

// Run serves until ctx is cancelled, then stops accepting connections and waits up to the
// shutdown timeout for in-flight requests to finish. It logs the address it listens on.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.config.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.config.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Echo,
		ReadHeaderTimeout: s.config.ReadHeaderTimeout,
		ReadTimeout:       s.config.ReadTimeout,
		WriteTimeout:      s.config.WriteTimeout,
		IdleTimeout:       s.config.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.host = reachableAt(ln.Addr())
	served := make(chan error, 1)
	if s.config.TLSCert != "" {
		go func() { served <- srv.ServeTLS(ln, s.config.TLSCert, s.config.TLSKey) }()
	} else {
		go func() { served <- srv.Serve(ln) }()
	}
	s.logger.Info("listening", "addr", ln.Addr().String(), "tls", s.config.TLSCert != "")

	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	s.logger.Info("shutting down: draining in-flight requests", "timeout", s.config.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.config.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
		return fmt.Errorf("draining requests: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// reachableAt is the host:port clients reach a listener at: its own address, or localhost for
// one on every interface.
func reachableAt(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
