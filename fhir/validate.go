package fhir

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// google/fhir checks what its protos can express: element names, cardinality, primitive
// formats, reference targets. The HL7 reference validator checks more, and a registry that
// other systems read must not hold what they would refuse. validateJSON is a second pass over
// the body as JSON, after google/fhir, that adds the base R4 rules google/fhir lets through:
//
//   - ele-1: no null, no empty array, object or string, no element with only an id;
//   - primitive lexical rules google/fhir is lax about: ids (contained ones too), integers
//     written "-0", decimals;
//   - txt-1, txt-2: the narrative is the FHIR subset of XHTML, with no active content;
//   - Attachment: size and hash agree with data;
//   - Bundle rules (bdl-3, -4, -7, -8, -9, -10, -11, -12 and fullUrl agreeing with the
//     resource's id), and dom-3 (a contained resource is referred to);
//   - the R4 StructureDefinitions' error-level constraints that the fhirpath package can
//     evaluate (validate_invariants.go).
//
// Every problem is an issue located by FHIRPath, so a client sees them all at once.

// Invariant is the OperationOutcome issue type of a broken constraint (R4 issue-type
// "invariant"), such as pat-1 or bdl-7.
const Invariant IssueType = "invariant"

// validateJSON returns the problems in root, a resource that google/fhir has parsed, decoded
// from JSON with json.Decoder.UseNumber.
func validateJSON(root map[string]any) []Issue {
	v := &validator{}
	if err := fhirpath.Walk(root, v.visit); err != nil {
		return nil // an unknown resourceType: google/fhir has said so too
	}
	return v.issues
}

type validator struct {
	issues []Issue
}

func (v *validator) add(severity Severity, code IssueType, location, format string, args ...any) {
	v.issues = append(v.issues, Issue{Severity: severity, Code: code, Diagnostics: fmt.Sprintf(format, args...), Expression: []string{location}})
}

func (v *validator) visit(e fhirpath.Element) bool {
	switch val := e.Node.Value.(type) {
	case nil:
		if e.Key != "" {
			v.add(Error, Structure, e.Path, "ele-1: null is not a value; leave out an element that has none")
		}
		// A null array item is checked with its array's object (pairedArrays).
		return false
	case []any:
		if len(val) == 0 {
			v.add(Error, Structure, e.Path, "ele-1: an empty array is not a value; leave out an element that has none")
		}
		return true
	case map[string]any:
		v.pairedArrays(e.Path, val)
		switch {
		case fhirpath.IsResourceType(e.Node.Type):
			v.resource(e, val)
		case len(val) == 0:
			v.add(Error, Structure, e.Path, "ele-1: an element must have a value or children; this one is {}")
		case len(val) == 1 && val["id"] != nil && e.Node.Type != "Element":
			v.add(Error, Structure, e.Path, "ele-1: an element must have a value or children; this one has only an id")
		}
		if e.Node.Type == "Attachment" {
			v.attachment(e.Path, val)
		}
		v.invariants(e)
		return true
	case string:
		v.primitiveString(e, val)
	case json.Number:
		v.number(e, string(val))
	}
	return false
}

// pairedArrays checks the null items of a primitive array: JSON keeps a primitive array's
// values ("given") and their extensions ("_given") in two arrays of the same length, where
// null stands for "none" in one of them, never in both.
func (v *validator) pairedArrays(path string, obj map[string]any) {
	for key, val := range obj {
		items, ok := val.([]any)
		if !ok {
			continue
		}
		pairKey := "_" + key
		if strings.HasPrefix(key, "_") {
			pairKey = key[1:]
		}
		pair, _ := obj[pairKey].([]any)
		name := strings.TrimPrefix(key, "_")
		if pair != nil && len(pair) != len(items) && !strings.HasPrefix(key, "_") {
			v.add(Error, Structure, path+"."+name, "%q has %d items and %q %d; they must have one each per value", key, len(items), pairKey, len(pair))
		}
		for i, item := range items {
			if item != nil {
				continue
			}
			if pair == nil || i >= len(pair) || pair[i] == nil {
				v.add(Error, Structure, fmt.Sprintf("%s.%s[%d]", path, name, i), "ele-1: item %d of %q is null with nothing in its place in %q", i, key, pairKey)
			}
		}
	}
}

var (
	// R4's lexical forms for the numeric primitives (datatypes.html); JSON's own number
	// syntax is looser than the integer one ("-0").
	integerForm = regexp.MustCompile(`^(0|-?[1-9][0-9]*)$`)
	decimalForm = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)
)

// maxDecimalDigits is where the HL7 validator warns that a decimal is past what systems
// commonly support (its checkDecimal's range).
const maxDecimalDigits = 18

func (v *validator) number(e fhirpath.Element, s string) {
	switch e.Node.Type {
	case "integer", "positiveInt", "unsignedInt":
		if !integerForm.MatchString(s) {
			v.add(Error, Value, e.Path, "%s is not a valid %s", s, e.Node.Type)
		}
	case "decimal":
		if !decimalForm.MatchString(s) {
			v.add(Error, Value, e.Path, "%s is not a valid decimal", s)
			return
		}
		mantissa, _, _ := strings.Cut(strings.ToLower(s), "e")
		digits := strings.TrimLeft(strings.NewReplacer("-", "", ".", "").Replace(mantissa), "0")
		if len(digits) > maxDecimalDigits {
			v.add(Warning, Value, e.Path, "%s has more than %d significant digits, more than most systems keep", s, maxDecimalDigits)
		}
	}
}

func (v *validator) primitiveString(e fhirpath.Element, s string) {
	if s == "" {
		v.add(Error, Value, e.Path, "ele-1: an empty string is not a value; leave out an element that has none")
		return
	}
	switch e.Node.Type {
	case "id":
		if !ValidID(s) {
			v.add(Error, Value, e.Path, "%q is not a valid id: 1 to 64 of A-Z, a-z, 0-9, '-' and '.'", truncate(s, 80))
		}
	case "xhtml":
		for _, p := range checkNarrative(s) {
			severity := Error
			if p.warning {
				severity = Warning
			}
			v.add(severity, Value, e.Path, "%s", p.text)
		}
	}
}

// attachment checks att-1's companions: size and hash describe the data, when there is data.
func (v *validator) attachment(path string, a map[string]any) {
	data, _ := a["data"].(string)
	if data == "" {
		return
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return // google/fhir refuses data that is not base64
	}
	if size, ok := a["size"].(json.Number); ok {
		if n, err := size.Int64(); err == nil && n != int64(len(raw)) {
			v.add(Error, Value, path+".size", "size is %d but data holds %d bytes", n, len(raw))
		}
	}
	if hash, ok := a["hash"].(string); ok {
		sum := sha1.Sum(raw)
		want := base64.StdEncoding.EncodeToString(sum[:])
		got, err := base64.StdEncoding.DecodeString(hash)
		switch {
		case hash == want:
		case err == nil && len(got) == sha1.Size:
			v.add(Error, Value, path+".hash", "hash is not the SHA-1 of data, which is %s", want)
		default:
			// Not a SHA-1 in base64 at all (HL7's DiagnosticReport-example-pgx has one in hex):
			// wrong, but nothing to compare, so a warning.
			v.add(Warning, Value, path+".hash", "hash should be the base64 SHA-1 of data, which is %s", want)
		}
	}
}

// resource checks the rules about a resource as a whole.
func (v *validator) resource(e fhirpath.Element, r map[string]any) {
	if contained, ok := r["contained"].([]any); ok && len(contained) > 0 {
		v.containedReferenced(e.Path, r, contained)
	}
	if e.Node.Type == "Bundle" {
		v.bundle(e.Path, r)
	}
}

// containedReferenced is dom-3: a contained resource must be referred to from elsewhere in
// its container ("#id"), or itself refer to the container ("#").
func (v *validator) containedReferenced(path string, r map[string]any, contained []any) {
	refs := map[string]bool{}
	collectLocalRefs(r, refs)
	for i, c := range contained {
		cr, ok := c.(map[string]any)
		if !ok {
			continue
		}
		id, _ := cr["id"].(string)
		if id != "" && refs["#"+id] {
			continue
		}
		toContainer := map[string]bool{}
		collectLocalRefs(cr, toContainer)
		if toContainer["#"] {
			continue
		}
		v.add(Error, Invalid, fmt.Sprintf("%s.contained[%d]", path, i),
			"dom-3: contained resource %q is not referred to from elsewhere in the resource, nor refers to it (a reference to \"#%s\" is expected)", id, id)
	}
}

// collectLocalRefs gathers every string in v that starts with '#': local references,
// canonicals and uris alike, as dom-3 counts them.
func collectLocalRefs(v any, into map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			collectLocalRefs(x, into)
		}
	case []any:
		for _, x := range v {
			collectLocalRefs(x, into)
		}
	case string:
		if strings.HasPrefix(v, "#") {
			into[v] = true
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
