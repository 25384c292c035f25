package fhir

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/httpx"
)

// ContentType is the media type of every FHIR response this server sends.
const ContentType = "application/fhir+json; charset=utf-8"

// negotiate answers 406 to clients that want only a format the server does not speak (XML,
// RDF) and 415 to bodies in one, before any handler runs.
func negotiate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if f := c.QueryParam("_format"); f != "" && httpx.Format(f, jsonFormats, jsonTypes...) == "" {
			return NewOutcome(http.StatusNotAcceptable, NotSupported,
				"_format="+f+" is not supported: this server speaks FHIR JSON only (XML is not supported); use _format=json")
		}
		if accept := req.Header.Get("Accept"); accept != "" && c.QueryParam("_format") == "" &&
			httpx.Preferred(accept, answerable...) == "" {
			return NewOutcome(http.StatusNotAcceptable, NotSupported,
				"cannot answer in "+accept+": this server speaks FHIR JSON only (XML is not supported); accept application/fhir+json")
		}
		if hasBody(req) {
			if err := checkContentType(c); err != nil {
				return err
			}
		}
		return next(c)
	}
}

func hasBody(req *http.Request) bool {
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return req.ContentLength != 0
	}
	return false
}

func checkContentType(c echo.Context) error {
	raw := c.Request().Header.Get("Content-Type")
	if raw == "" {
		// A body must say what it is: a browser's form or a stray script posting text must not
		// be read as a FHIR write (a plain form could otherwise send a transaction that deletes).
		return NewOutcome(http.StatusUnsupportedMediaType, NotSupported,
			"a request body needs a Content-Type: application/fhir+json (or application/json-patch+json for PATCH)")
	}
	mediaType, _, err := mime.ParseMediaType(raw)
	if err != nil {
		return NewOutcome(http.StatusUnsupportedMediaType, NotSupported, "malformed Content-Type: "+raw)
	}
	switch {
	case c.Request().Method == http.MethodPatch:
		if mediaType == "application/json-patch+json" {
			return nil
		}
		return NewOutcome(http.StatusUnsupportedMediaType, NotSupported,
			"PATCH takes a JSON Patch document (application/json-patch+json); "+mediaType+" is not supported")
	case mediaType == "application/x-www-form-urlencoded" && strings.HasSuffix(c.Path(), "/_search"):
		return nil
	case isJSONMedia(mediaType):
		return nil
	case strings.Contains(mediaType, "xml"):
		return NewOutcome(http.StatusUnsupportedMediaType, NotSupported, "XML is not supported: send FHIR JSON (application/fhir+json)")
	}
	return NewOutcome(http.StatusUnsupportedMediaType, NotSupported, mediaType+" is not supported: send FHIR JSON (application/fhir+json)")
}

// jsonTypes are the media types of FHIR JSON a client may send or ask for.
var jsonTypes = []string{"application/fhir+json", "application/json", "text/json", "application/json+fhir"}

// jsonFormats are the short names _format may give FHIR JSON by.
var jsonFormats = map[string]string{"json": "application/fhir+json"}

// answerable is what an Accept header may ask for and get FHIR JSON: R4's (a fhirVersion
// parameter must say 4.0, or the 4.0.1 some clients send), the other JSON types, and a
// browser's HTML.
var answerable = append([]string{"application/fhir+json; fhirVersion=4.0", "application/fhir+json; fhirVersion=4.0.1"},
	append(slices.Clone(jsonTypes[1:]), "text/html")...)

func isJSONMedia(mediaType string) bool { return slices.Contains(jsonTypes, mediaType) }

// preference is what the client's Prefer header asks for.
type preference struct {
	Return         string // "minimal", "representation" (default) or "OperationOutcome"
	StrictHandling bool   // handling=strict: unknown search parameters are errors
}

func preferences(req *http.Request) preference {
	p := preference{Return: "representation"}
	for _, header := range req.Header.Values("Prefer") {
		for _, token := range strings.FieldsFunc(header, func(r rune) bool { return r == ',' || r == ';' }) {
			name, value, _ := strings.Cut(strings.TrimSpace(token), "=")
			value = strings.Trim(strings.TrimSpace(value), `"`)
			switch strings.TrimSpace(name) {
			case "return":
				if value == "minimal" || value == "representation" || value == "OperationOutcome" {
					p.Return = value
				}
			case "handling":
				p.StrictHandling = value == "strict"
			}
		}
	}
	return p
}

// Pretty tells whether the client asked for indented JSON (_pretty or _pretty=true). The
// error handler asks it too, so every response reads the parameter alike.
func Pretty(c echo.Context) bool {
	v, ok := c.QueryParams()["_pretty"]
	return ok && (len(v) == 0 || v[0] == "" || v[0] == "true")
}

// writeJSON sends FHIR JSON the server already holds as bytes, indenting it if asked.
func writeJSON(c echo.Context, status int, body []byte) error {
	if Pretty(c) {
		var buf bytes.Buffer
		if err := json.Indent(&buf, body, "", "  "); err == nil {
			body = buf.Bytes()
		}
	}
	return c.Blob(status, ContentType, body)
}

// Group is the /fhir route group with the API's content negotiation, for packages that serve
// FHIR operations of their own (terminology's).
func Group(e *echo.Echo) *echo.Group { return e.Group("/fhir", negotiate) }

// WriteJSON sends FHIR JSON, indented when the request asks for _pretty.
func WriteJSON(c echo.Context, status int, body []byte) error { return writeJSON(c, status, body) }
