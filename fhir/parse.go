package fhir

import (
	"bytes"
	"encoding/json"

	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// Resource is a validated FHIR resource in the server's normalised form.
type Resource struct {
	Type string
	ID   string
	// Body is the resource as JSON values (numbers as json.Number, so no precision is lost).
	Body map[string]any
}

var (
	parserOnce sync.Once
	parser     *jsonformat.Unmarshaller
	parserErr  error
)

func r4Parser() (*jsonformat.Unmarshaller, error) {
	parserOnce.Do(func() { parser, parserErr = jsonformat.NewUnmarshaller("UTC", fhirversion.R4) })
	return parser, parserErr
}

// issueCollector gathers every validation problem google/fhir finds, with its location,
// instead of stopping at the first.
type issueCollector struct{ issues []Issue }

func (c *issueCollector) ReportValidationError(path string, err error) error {
	c.issues = append(c.issues, issueFromParseError(path, err, Error))
	return nil
}

func (c *issueCollector) ReportValidationWarning(path string, err error) error {
	c.issues = append(c.issues, issueFromParseError(path, err, Warning))
	return nil
}

// Parse parses and validates a FHIR R4 resource in JSON with google/fhir and returns it in
// the server's normalised form. Every problem found is an issue of a 400 Outcome, located by
// its FHIRPath.
func Parse(body []byte) (*Resource, error) {
	u, err := r4Parser()
	if err != nil {
		return nil, fmt.Errorf("google/fhir R4 parser: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, NewOutcome(http.StatusBadRequest, Required, "the request has no body; a FHIR resource in JSON is expected")
	}
	collector := &issueCollector{}
	msg, err := u.UnmarshalWithErrorReporter(body, collector)
	var issues []Issue
	if err != nil {
		issues = issuesFromParseError(err)
	} else {
		issues = collector.issues
	}
	if err == nil {
		issues = append(issues, checkParsed(msg)...)
	}
	// The second pass adds the base R4 rules that google/fhir lets through, so that one
	// answer lists every problem; where google/fhir has spoken, it alone. It reads the body
	// decoded once, and a valid resource is stored as that decoding: google/fhir's own
	// rendering of what it parsed is the same JSON (TestTheParsedFormIsTheBodyAsSent), and
	// making it, then decoding it again, cost an eighth of the server's CPU on ingest.
	res, decodeErr := decodeResource(body)
	if decodeErr == nil {
		issues = mergeIssues(issues, validateJSON(res.Body))
	}
	if err != nil || hasErrors(issues) {
		return nil, &Outcome{Status: http.StatusBadRequest, Issues: byLocation(issues)}
	}
	if decodeErr != nil {
		return nil, decodeErr
	}
	res.Type = resourceTypeOf(msg)
	return res, nil
}

// mergeIssues adds to first the issues of second at locations first does not mention.
func mergeIssues(first, second []Issue) []Issue {
	if len(second) == 0 {
		return first
	}
	located := make(map[string]bool, len(first))
	for _, is := range first {
		for _, e := range is.Expression {
			located[e] = true
		}
	}
	for _, is := range second {
		if len(is.Expression) == 0 || !located[is.Expression[0]] {
			first = append(first, is)
		}
	}
	return first
}

// byLocation sorts issues by where they are. google/fhir walks a resource's elements in Go map
// order, so the same body would otherwise list its problems differently from one request to
// the next.
func byLocation(issues []Issue) []Issue {
	sort.SliceStable(issues, func(i, j int) bool {
		return strings.Join(issues[i].Expression, ",") < strings.Join(issues[j].Expression, ",")
	})
	return issues
}

func hasErrors(issues []Issue) bool {
	for _, is := range issues {
		if is.Severity == Error || is.Severity == Fatal {
			return true
		}
	}
	return false
}

// decodeResource reads a resource's JSON, keeping numbers as written (json.Number).
func decodeResource(raw []byte) (*Resource, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil {
		return nil, fmt.Errorf("decoding a resource: %w", err)
	}
	res := &Resource{Body: body}
	res.Type, _ = body["resourceType"].(string)
	res.ID, _ = body["id"].(string)
	return res, nil
}

// resourceTypeOf names the resource inside a ContainedResource.
func resourceTypeOf(msg any) string {
	m, ok := msg.(interface{ ProtoReflect() protoreflect.Message })
	if !ok {
		return ""
	}
	r := m.ProtoReflect()
	oneof := r.Descriptor().Oneofs().Get(0)
	if f := r.WhichOneof(oneof); f != nil {
		return string(r.Get(f).Message().Descriptor().Name())
	}
	return ""
}

// JSON renders the resource: "resourceType" first, then the other elements in the stable
// (sorted) order google/fhir's marshaller uses, without HTML escaping.
func (r *Resource) JSON() ([]byte, error) {
	out := make([]byte, 0, 1024)
	out = append(out, `{"resourceType":`...)
	out = appendJSONString(out, r.Type)
	keys := make([]string, 0, len(r.Body))
	for k := range r.Body {
		if k != "resourceType" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, ',')
		out = appendJSONString(out, k)
		out = append(out, ':')
		var err error
		if out, err = appendJSON(out, r.Body[k]); err != nil {
			return nil, err
		}
	}
	return append(out, '}'), nil
}

// ResourceTypes lists every R4 resource type google/fhir knows, sorted.
func ResourceTypes() []string { return fhirpath.ResourceTypes() }

// IsResourceType tells whether name is an R4 resource type, such as "Patient".
func IsResourceType(name string) bool { return fhirpath.IsResourceType(name) }

// google/fhir's unmarshalling errors are of an internal type with exported fields Path,
// Details and Diagnostics (or lists of them); reflection reads them without depending on the
// internal package.
func issuesFromParseError(err error) []Issue {
	v := reflect.ValueOf(err)
	if v.Kind() == reflect.Slice {
		var issues []Issue
		for i := 0; i < v.Len(); i++ {
			if e, ok := v.Index(i).Interface().(error); ok {
				issues = append(issues, issueFromParseError("", e, Error))
			}
		}
		if len(issues) > 0 {
			return issues
		}
	}
	return []Issue{issueFromParseError("", err, Error)}
}

func issueFromParseError(path string, err error, severity Severity) Issue {
	details, diagnostics := err.Error(), ""
	v := reflect.ValueOf(err)
	for v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct {
		if f := v.FieldByName("Path"); f.IsValid() && f.Kind() == reflect.String && f.String() != "" {
			path = f.String()
		}
		if f := v.FieldByName("Details"); f.IsValid() && f.Kind() == reflect.String {
			details = f.String()
		}
		if f := v.FieldByName("Diagnostics"); f.IsValid() && f.Kind() == reflect.String {
			diagnostics = f.String()
		}
	}
	// The library prefixes its messages with the location; the location has its own field.
	if i := strings.Index(details, `": `); strings.HasPrefix(details, "error at ") && i > 0 {
		details = details[i+3:]
	}
	// An unknown element is best located at itself: Patient.foo rather than Patient.
	if name := strings.Trim(diagnostics, `"`); details == "unknown field" && path != "" && name != "" {
		path += "." + name
		diagnostics = ""
	}
	if diagnostics != "" && !strings.Contains(details, diagnostics) {
		details += ": " + diagnostics
	}
	issue := Issue{Severity: severity, Code: issueTypeForParse(details), Diagnostics: details}
	if path != "" {
		issue.Expression = []string{path}
	}
	return issue
}

func issueTypeForParse(details string) IssueType {
	switch {
	case strings.Contains(details, "invalid JSON"):
		return Structure
	case strings.Contains(details, "missing required"):
		return Required
	case strings.Contains(details, "unknown field"), strings.Contains(details, "unknown resource type"):
		return Structure
	}
	return Value
}
