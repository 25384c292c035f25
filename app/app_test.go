package app_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// One clock for every part: the store dates versions by it, and the registry and the work
// list count days by it.
func TestEveryPartReadsTheOneClock(t *testing.T) {
	h := apptest.New(t)
	at := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	h.SetNow(at)
	created := h.Expect(http.StatusCreated, "POST", "/fhir/Patient", `{"resourceType":"Patient","birthDate":"1960-01-01"}`).JSON(t)
	if got := created["meta"].(map[string]any)["lastUpdated"]; got != "2031-05-06T07:08:09.000Z" {
		t.Errorf("lastUpdated %v, want the harness's clock", got)
	}
	list := h.Expect(http.StatusOK, "GET", "/worklist", nil).JSON(t)
	if list["as_of"] != "2031-05-06" {
		t.Errorf("the work list is as of %v, want 2031-05-06", list["as_of"])
	}
	h.Expect(http.StatusOK, "GET", "/registry/outcomes/response", nil)
	h.Expect(http.StatusOK, "GET", "/fhir/metadata", nil)
}

// The capability statement and the SMART configuration, both public, tell a client where to
// get its token.
func TestDiscoveryNamesTheTokenEndpoint(t *testing.T) {
	h := apptest.New(t)
	cs := h.Expect(http.StatusOK, "GET", "/fhir/metadata", nil, "Authorization", "").JSON(t)
	security, _ := cs["rest"].([]any)[0].(map[string]any)["security"].(map[string]any)
	if !strings.Contains(fmt.Sprint(security), h.URL+"/auth/token") || !strings.Contains(fmt.Sprint(security), "SMART-on-FHIR") {
		t.Errorf("rest.security = %v", security)
	}
	smart := h.Expect(http.StatusOK, "GET", "/.well-known/smart-configuration", nil, "Authorization", "").JSON(t)
	if smart["token_endpoint"] != h.URL+"/auth/token" {
		t.Errorf("smart-configuration token_endpoint = %v", smart["token_endpoint"])
	}
}
