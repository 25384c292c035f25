// Package fhir is cartreg's FHIR R4 interface: how resources are parsed, validated and stored,
// and how every problem reaches a client, as an OperationOutcome.
//
// The REST API (API) is a thin HTTP layer over the Store, the Searcher and the
// BundleProcessor, which runs transaction and batch Bundles for POST /fhir and for bulk
// import alike and knows nothing of HTTP. A Guard, when configured, is asked about every
// Bundle entry (an Access: interaction, type, id) before anything is written.
package fhir

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	oopb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/operation_outcome_go_proto"
)

// Severity is an OperationOutcome issue severity (R4 value set issue-severity).
type Severity string

// The issue severities.
const (
	Fatal       Severity = "fatal"
	Error       Severity = "error"
	Warning     Severity = "warning"
	Information Severity = "information"
)

// IssueType is an OperationOutcome issue code (R4 value set issue-type).
type IssueType string

// The issue types cartreg reports.
const (
	Invalid      IssueType = "invalid"
	Structure    IssueType = "structure"
	Incomplete   IssueType = "incomplete"
	Required     IssueType = "required"
	Value        IssueType = "value"
	NotFound     IssueType = "not-found"
	Deleted      IssueType = "deleted"
	NotSupported IssueType = "not-supported"
	Conflict     IssueType = "conflict"
	Duplicate    IssueType = "duplicate"
	TooCostly    IssueType = "too-costly"
	BusinessRule IssueType = "business-rule"
	Processing   IssueType = "processing"
	Exception    IssueType = "exception"
	Transient    IssueType = "transient"
	Timeout      IssueType = "timeout"
	Security     IssueType = "security"
	Throttled    IssueType = "throttled"
	// Informational is for an OperationOutcome that reports success (Prefer: return=OperationOutcome).
	Informational IssueType = "informational"
)

// Issue is one problem, located by FHIRPath expressions such as "Patient.birthDate".
type Issue struct {
	Severity    Severity
	Code        IssueType
	Diagnostics string
	Expression  []string
	// Resource names the resource at fault ("Observation/42") when the issue is found after the
	// resource was written (a write hook's rule); it is not rendered, but lets a Bundle's error
	// name the entry.
	Resource string
}

// Outcome is an error a client can act on: an HTTP status and the issues that explain it.
// Domain code returns it; the HTTP layer renders it as an OperationOutcome, once, in one place.
type Outcome struct {
	Status int
	Issues []Issue
}

// NewOutcome is an Outcome with one error issue.
func NewOutcome(status int, code IssueType, diagnostics string, expression ...string) *Outcome {
	return &Outcome{Status: status, Issues: []Issue{{Severity: Error, Code: code, Diagnostics: diagnostics, Expression: expression}}}
}

// Error lists the diagnostics, for logs.
func (o *Outcome) Error() string {
	parts := make([]string, 0, len(o.Issues))
	for _, is := range o.Issues {
		p := is.Diagnostics
		if len(is.Expression) > 0 {
			p = strings.Join(is.Expression, ", ") + ": " + p
		}
		parts = append(parts, p)
	}
	return fmt.Sprintf("%d %s: %s", o.Status, http.StatusText(o.Status), strings.Join(parts, "; "))
}

var compactMarshaller, prettyMarshaller = mustMarshaller(false), mustMarshaller(true)

func mustMarshaller(pretty bool) *jsonformat.Marshaller {
	var m *jsonformat.Marshaller
	var err error
	if pretty {
		m, err = jsonformat.NewPrettyMarshaller(fhirversion.R4)
	} else {
		m, err = jsonformat.NewMarshaller(false, "", "", fhirversion.R4)
	}
	if err != nil {
		panic(fmt.Sprintf("google/fhir R4 marshaller: %v", err)) // only if the library is broken
	}
	return m
}

// MarshalOutcome renders issues as an R4 OperationOutcome in FHIR JSON.
func MarshalOutcome(issues []Issue, pretty bool) ([]byte, error) {
	oo := &oopb.OperationOutcome{}
	for _, is := range issues {
		severity, ok := cpb.IssueSeverityCode_Value_value[enumName(string(is.Severity))]
		if !ok {
			return nil, fmt.Errorf("unknown issue severity %q", is.Severity)
		}
		code, ok := cpb.IssueTypeCode_Value_value[enumName(string(is.Code))]
		if !ok {
			return nil, fmt.Errorf("unknown issue type %q", is.Code)
		}
		issue := &oopb.OperationOutcome_Issue{
			Severity: &oopb.OperationOutcome_Issue_SeverityCode{Value: cpb.IssueSeverityCode_Value(severity)},
			Code:     &oopb.OperationOutcome_Issue_CodeType{Value: cpb.IssueTypeCode_Value(code)},
		}
		if is.Diagnostics != "" {
			issue.Diagnostics = &dpb.String{Value: is.Diagnostics}
		}
		for _, e := range is.Expression {
			issue.Expression = append(issue.Expression, &dpb.String{Value: e})
		}
		oo.Issue = append(oo.Issue, issue)
	}
	m := compactMarshaller
	if pretty {
		m = prettyMarshaller
	}
	return m.MarshalResource(oo)
}

// enumName turns a FHIR code into the name of its google/fhir enum value: "not-found" is
// NOT_FOUND.
func enumName(code string) string {
	return strings.ToUpper(strings.ReplaceAll(code, "-", "_"))
}
