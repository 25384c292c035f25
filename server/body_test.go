package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

// rawRequest writes req on a fresh TCP connection to base and returns the response, or nil if
// the server closed the connection without one. half closes the client's writing side after
// the request, as a client that sent everything it meant to does.
func rawRequest(t *testing.T, base, req string, half bool) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if half {
		conn.(*net.TCPConn).CloseWrite()
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// echoBody registers POST /echo, which reads its body as the FHIR handlers do.
func echoBody(s *Server) {
	s.Echo.POST("/echo", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "text/plain", b)
	})
}

// accessLine waits for the access-log line of the request to path and returns it.
func accessLine(t *testing.T, logs *syncBuffer, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, `"path":"`+path+`"`) {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no access-log line for %s in:\n%s", path, logs.String())
	return ""
}

// noServerFault fails if the log reports a server fault.
func noServerFault(t *testing.T, logs *syncBuffer) {
	t.Helper()
	out := logs.String()
	if strings.Contains(out, `"level":"ERROR"`) || strings.Contains(out, "request failed") || strings.Contains(out, `"status":500`) {
		t.Fatalf("a client's mistake was logged as a server fault:\n%s", out)
	}
}

func TestMalformedChunkedBodiesAre400s(t *testing.T) {
	head := "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
	cases := map[string]struct {
		body, code string
	}{
		"chunk length not hex":      {"zz\r\nhello\r\n0\r\n\r\n", "structure"},
		"chunk without its CRLF":    {"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n", "structure"},
		"chunk length too large":    {"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "structure"},
		"ends without a last chunk": {"5\r\nhello\r\n", "incomplete"},
		"ends inside a chunk":       {"a\r\nhel", "incomplete"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, logs := newServer(t, pgtest.NewDatabase(t))
			echoBody(s)
			base := running(t, s)
			res := rawRequest(t, base, head+tc.body, true)
			if res == nil {
				t.Fatal("the server closed the connection without an answer")
			}
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400: %s", res.StatusCode, b)
			}
			if o := decodeOutcome(t, res.Header, b); o.Issue[0].Code != tc.code {
				t.Fatalf("issue = %+v, want code %s", o.Issue[0], tc.code)
			}
			if line := accessLine(t, logs, "/echo"); !strings.Contains(line, `"status":400`) {
				t.Fatalf("access log: %s", line)
			}
			noServerFault(t, logs)
		})
	}
}

func TestBodyShorterThanItsContentLengthIs400(t *testing.T) {
	s, logs := newServer(t, pgtest.NewDatabase(t))
	echoBody(s)
	base := running(t, s)
	res := rawRequest(t, base, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this", true)
	if res == nil {
		t.Fatal("no answer")
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "ended before it was complete") {
		t.Fatalf("status = %d: %s", res.StatusCode, b)
	}
	noServerFault(t, logs)
}

func TestClientClosingMidBodyIsNoServerFault(t *testing.T) {
	s, logs := newServer(t, pgtest.NewDatabase(t))
	echoBody(s)
	base := running(t, s)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab")
	time.Sleep(100 * time.Millisecond) // the handler is reading the body
	conn.(*net.TCPConn).SetLinger(0)   // a reset, as a killed client leaves
	conn.Close()
	line := accessLine(t, logs, "/echo")
	if !strings.Contains(line, `"status":400`) && !strings.Contains(line, `"status":499`) {
		t.Fatalf("access log: %s", line)
	}
	noServerFault(t, logs)
}

func TestClientGoneDuringHandlingIsLoggedAsAnAbort(t *testing.T) {
	s, logs := newServer(t, pgtest.NewDatabase(t))
	started := make(chan struct{})
	s.Echo.GET("/slow", func(c echo.Context) error {
		close(started)
		<-c.Request().Context().Done()
		// What pgx returns when a query's context is cancelled, wrapped as store code does.
		return errors.Join(errors.New("searching"), c.Request().Context().Err())
	})
	base := running(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/slow", nil)
	go func() { <-started; cancel() }()
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("the request was answered after its client gave up")
	}
	line := accessLine(t, logs, "/slow")
	if !strings.Contains(line, `"status":499`) || !strings.Contains(line, `"level":"WARN"`) {
		t.Fatalf("access log: %s", line)
	}
	if !strings.Contains(logs.String(), `"msg":"client abort"`) {
		t.Fatalf("no client abort logged:\n%s", logs.String())
	}
	noServerFault(t, logs)
}

func TestMaxBytesErrorIs413NamingTheLimit(t *testing.T) {
	s, logs := newServer(t, pgtest.NewDatabase(t))
	s.Echo.POST("/capped", func(c echo.Context) error {
		_, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, 10))
		return err
	})
	base := running(t, s)
	status, header, body := do(t, http.MethodPost, base+"/capped", strings.NewReader(strings.Repeat("x", 100)))
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d: %s", status, body)
	}
	if o := decodeOutcome(t, header, body); !strings.Contains(o.Issue[0].Diagnostics, "CARTREG_MAX_BODY_SIZE") {
		t.Fatalf("the limit is not named: %+v", o.Issue[0])
	}
	noServerFault(t, logs)
}

func TestBodySlowerThanTheReadTimeoutIs408(t *testing.T) {
	logs := &syncBuffer{}
	cfg := testConfig()
	cfg.ReadTimeout = 300 * time.Millisecond
	s := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), pgtest.NewDatabase(t))
	echoBody(s)
	base := running(t, s)
	// Half a body, then nothing: the read deadline passes while the handler waits for more.
	res := rawRequest(t, base, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf", false)
	if res == nil {
		t.Fatal("no answer")
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "CARTREG_READ_TIMEOUT") {
		t.Fatalf("status = %d: %s", res.StatusCode, b)
	}
	noServerFault(t, logs)
}
