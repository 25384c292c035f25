package server

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/migrations"
)

// healthz answers while the process can serve HTTP at all: a liveness probe.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 only when the database answers and its schema is exactly the one this
// binary expects: a readiness probe, so traffic waits for migrations.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	status, err := migrations.GetStatus(ctx, s.db)
	if err != nil {
		s.logger.Warn("readiness: database unreachable", "error", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "reason": "database unreachable"})
	}
	if err := status.Check(); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "reason": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "schema_version": status.Current})
}
