package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
)

// handleError is the single path from an error to the wire: every failure, from a handler,
// the router or a middleware, leaves as an OperationOutcome with the right status. Server
// faults are logged with the request id and told to the client only by that id, so no SQL or
// stack trace ever leaks.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	outcome, aborted := s.toOutcome(err, c)
	if aborted {
		// Nobody is left to read an answer: record the status for the access log only.
		c.Response().WriteHeader(outcome.Status)
		return
	}
	body, merr := fhir.MarshalOutcome(outcome.Issues, fhir.Pretty(c))
	if merr != nil {
		s.logger.Error("rendering OperationOutcome", "error", merr, "request_id", requestID(c))
		body = []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}`)
	}
	if c.Request().Method == http.MethodHead {
		err = c.NoContent(outcome.Status)
	} else {
		err = c.Blob(outcome.Status, fhir.ContentType, body)
	}
	if err != nil {
		s.logger.Warn("writing error response", "error", err, "request_id", requestID(c))
	}
}

// toOutcome turns err into what the client is told; aborted says the client has gone.
func (s *Server) toOutcome(err error, c echo.Context) (outcome *fhir.Outcome, aborted bool) {
	// The client's faults come first: a handler may have wrapped a body read error or a
	// cancellation into something that would otherwise read as a server fault.
	if o, gone := s.clientFault(err, c); o != nil {
		level, msg := slog.LevelInfo, "bad request body"
		if gone {
			level, msg = slog.LevelWarn, "client abort"
		}
		s.logger.Log(c.Request().Context(), level, msg, "error", err, "status", o.Status, "request_id", requestID(c))
		return o, gone
	}
	if errors.As(err, &outcome) {
		if outcome.Status >= 500 {
			s.logger.Error("request failed", "error", err, "request_id", requestID(c))
		}
		return outcome, false
	}
	var he *echo.HTTPError
	if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
		return s.tooLarge(0), false
	}
	if errors.As(err, &he) && he.Code < 500 {
		return fhir.NewOutcome(he.Code, issueTypeFor(he.Code), clientMessage(c, he)), false
	}
	s.logger.Error("request failed", "error", err, "request_id", requestID(c))
	return fhir.NewOutcome(http.StatusInternalServerError, fhir.Exception,
		"internal server error; quote request id "+requestID(c)+" when reporting it"), false
}

func clientMessage(c echo.Context, he *echo.HTTPError) string {
	switch he.Code {
	case http.StatusNotFound:
		return fmt.Sprintf("no such endpoint: %s %s", c.Request().Method, c.Request().URL.Path)
	case http.StatusMethodNotAllowed:
		return fmt.Sprintf("%s is not allowed on %s", c.Request().Method, c.Request().URL.Path)
	case http.StatusRequestEntityTooLarge:
		return "request body is larger than this server accepts"
	}
	if msg, ok := he.Message.(string); ok {
		return msg
	}
	return http.StatusText(he.Code)
}

func issueTypeFor(status int) fhir.IssueType {
	switch status {
	case http.StatusNotFound:
		return fhir.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotAcceptable, http.StatusUnsupportedMediaType:
		return fhir.NotSupported
	case http.StatusRequestEntityTooLarge:
		return fhir.TooCostly
	case http.StatusConflict, http.StatusPreconditionFailed:
		return fhir.Conflict
	case http.StatusGone:
		return fhir.Deleted
	case http.StatusUnauthorized, http.StatusForbidden:
		return fhir.Security
	case http.StatusTooManyRequests:
		return fhir.Throttled
	case http.StatusRequestTimeout:
		return fhir.Timeout
	}
	return fhir.Invalid
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

func (s *Server) logPanic(c echo.Context, err error, stack []byte) error {
	s.logger.Error("panic while handling request", "error", err, "request_id", requestID(c), "stack", string(stack))
	return err
}

// logRequests logs one line per request. Errors go through handleError first, so the line
// carries the status the client really got. It logs the path but never the query string,
// where FHIR searches carry names, birth dates and identifiers.
func (s *Server) logRequests() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			status := c.Response().Status
			level := slog.LevelInfo
			switch {
			case status == StatusClientClosedRequest:
				level = slog.LevelWarn
			case status >= 500:
				level = slog.LevelError
			}
			s.logger.LogAttrs(c.Request().Context(), level, "request",
				slog.String("request_id", requestID(c)),
				slog.String("client_request_id", clientRequestID(c)),
				slog.String("method", c.Request().Method),
				slog.String("path", c.Request().URL.Path),
				slog.Int("status", status),
				slog.Duration("latency", time.Since(start)),
				slog.Int64("bytes_out", c.Response().Size),
				slog.String("remote_ip", c.RealIP()),
			)
			return nil
		}
	}
}
