package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
)

// StatusClientClosedRequest is the status the access log records for a request whose client
// went away before it was answered (nginx's 499): nobody receives it, and it is no server fault.
const StatusClientClosedRequest = 499

// bodyError is a failure to read the request body from the client: a malformed chunked
// encoding, a body shorter than its Content-Length, a connection reset or a read deadline.
// Handlers read bodies with io.ReadAll and return what it returns, so marking the error here,
// where the bytes come from, is what lets the error handler tell it from a server fault
// without knowing every handler.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// markedBody wraps a request body so that its read errors become *bodyError.
type markedBody struct{ io.ReadCloser }

func (b markedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err: err}
	}
	return n, err
}

// markBodyErrors must run before the body limit, so that the limit's own 413 (raised by the
// reader the limit wraps around this one) stays a 413.
func markBodyErrors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r := c.Request(); r.Body != nil && r.Body != http.NoBody {
			r.Body = markedBody{r.Body}
		}
		return next(c)
	}
}

// clientFault classifies errors that are the client's doing rather than the server's: a bad
// or aborted body, or a client that closed the connection while its request was being
// answered. aborted is true when nobody is left to read an answer; the outcome is then only
// for the access log.
func (s *Server) clientFault(err error, c echo.Context) (outcome *fhir.Outcome, aborted bool) {
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return s.tooLarge(maxBytes.Limit), false
	}
	if errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil {
		return fhir.NewOutcome(StatusClientClosedRequest, fhir.Incomplete,
			"the client closed the connection before the request was answered"), true
	}
	var be *bodyError
	if !errors.As(err, &be) {
		return nil, false
	}
	var netErr net.Error
	switch {
	case errors.As(be.err, &netErr) && netErr.Timeout():
		return fhir.NewOutcome(http.StatusRequestTimeout, fhir.Timeout, fmt.Sprintf(
			"the request body did not arrive within the read timeout (CARTREG_READ_TIMEOUT, %s)", s.config.ReadTimeout)), false
	case errors.Is(be.err, io.ErrUnexpectedEOF):
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Incomplete,
			"the request body ended before it was complete (shorter than its Content-Length, or a chunked body without its last chunk)"), false
	case errors.Is(be.err, net.ErrClosed), errors.As(be.err, new(*net.OpError)):
		return fhir.NewOutcome(StatusClientClosedRequest, fhir.Incomplete,
			"the connection broke while the request body was being read"), true
	}
	// What is left comes from net/http's chunked decoder ("malformed chunked encoding",
	// "invalid byte in chunk length", ...), whose errors are not exported: any read error of
	// the body is the client's, and its text says nothing about the server.
	return fhir.NewOutcome(http.StatusBadRequest, fhir.Structure, "the request body could not be read: "+be.err.Error()), false
}

// tooLarge names the body limit a client went over.
func (s *Server) tooLarge(limit int64) *fhir.Outcome {
	size := s.config.MaxBodySize
	if limit > 0 && size == "" {
		size = fmt.Sprintf("%d bytes", limit)
	}
	return fhir.NewOutcome(http.StatusRequestEntityTooLarge, fhir.TooCostly,
		fmt.Sprintf("the request body is larger than this server accepts (CARTREG_MAX_BODY_SIZE, %s)", size))
}
