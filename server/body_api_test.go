package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
)

// Every FHIR endpoint that reads a body answers a broken one with a 400, never a 500.
func TestFHIREndpointsAnswerBrokenBodiesWith400(t *testing.T) {
	h := apptest.New(t)
	token := h.Token(auth.RoleAdmin)
	endpoints := []struct{ method, path, contentType string }{
		{http.MethodPost, "/fhir/Patient", "application/fhir+json"},
		{http.MethodPut, "/fhir/Patient/p1", "application/fhir+json"},
		{http.MethodPatch, "/fhir/Patient/p1", "application/json-patch+json"},
		{http.MethodPost, "/fhir", "application/fhir+json"},
		{http.MethodPost, "/fhir/Patient/_search", "application/x-www-form-urlencoded"},
	}
	for _, ep := range endpoints {
		for name, body := range map[string]string{"malformed": "zz\r\n{}\r\n0\r\n\r\n", "cut short": "40\r\n{\"resourceType\":"} {
			t.Run(ep.method+" "+ep.path+" "+name, func(t *testing.T) {
				conn, err := net.Dial("tcp", strings.TrimPrefix(h.URL, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				io.WriteString(conn, ep.method+" "+ep.path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+token+
					"\r\nContent-Type: "+ep.contentType+"\r\nTransfer-Encoding: chunked\r\n\r\n"+body)
				conn.(*net.TCPConn).CloseWrite()
				res, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				b, _ := io.ReadAll(res.Body)
				if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "OperationOutcome") {
					t.Fatalf("status = %d: %s", res.StatusCode, b)
				}
			})
		}
	}
}
