package fhir

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// ContentType is the media type of every FHIR response this server sends.
const ContentType = "application/fhir+json; charset=utf-8"

// negotiate answers 406 to clients that want only a format the server does not speak (XML,
// RDF) and 415 to bodies in one, before any handler runs.
func negotiate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if f := c.QueryParam("_format"); f != "" && !isJSONFormat(f) {
			return NewOutcome(http.StatusNotAcceptable, NotSupported,
				"_format="+f+" is not supported: this server speaks FHIR JSON only (XML is not supported); use _format=json")
		}
		if accept := req.Header.Get("Accept"); accept != "" && c.QueryParam("_format") == "" && !acceptsJSON(accept) {
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
		return nil // lenient: a body without a type is read as JSON
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

func isJSONMedia(mediaType string) bool {
	return mediaType == "application/fhir+json" || mediaType == "application/json" || mediaType == "text/json" || mediaType == "application/json+fhir"
}

func isJSONFormat(f string) bool {
	f = strings.ToLower(strings.TrimSpace(f))
	if mediaType, _, err := mime.ParseMediaType(f); err == nil {
		f = mediaType
	}
	return f == "json" || isJSONMedia(f)
}

// acceptsJSON reads an Accept header: JSON, a wildcard that covers it, or nothing in
// particular will do.
func acceptsJSON(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok && strings.TrimSpace(q) == "0" {
			continue
		}
		if isJSONMedia(mediaType) || mediaType == "*/*" || mediaType == "application/*" || mediaType == "text/html" {
			return true
		}
	}
	return false
}

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
