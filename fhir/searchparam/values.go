package searchparam

import "time"

// Type is a search parameter type, as the specification names it.
type Type string

// The search parameter types of R4.
const (
	String    Type = "string"
	Token     Type = "token"
	Date      Type = "date"
	Reference Type = "reference"
	Number    Type = "number"
	Quantity  Type = "quantity"
	URI       Type = "uri"
	Composite Type = "composite"
	Special   Type = "special"
)

// Definition is one search parameter as it applies to one resource type.
type Definition struct {
	Code        string   // the name used in a query, e.g. "birthdate"
	Type        Type     //
	Resource    string   // the resource type it applies to
	Expression  string   // FHIRPath, as in the specification
	Targets     []string // resource types a reference parameter may point to
	URL         string   // canonical URL of the SearchParameter
	Description string
}

// Values are the index entries of one resource: for every search parameter that applies to
// its type, what a search can match. Each entry names its parameter by Code.
type Values struct {
	Strings    []StringValue
	Tokens     []TokenValue
	Dates      []DateValue
	References []ReferenceValue
	Numbers    []NumberValue
	Quantities []QuantityValue
	URIs       []URIValue
}

// StringValue is one string to match: a primitive string, or one part of a HumanName
// (family, given, prefix, suffix, text) or an Address (line, city, district, state,
// postalCode, country, text).
type StringValue struct {
	Code       string
	Value      string // as written, for :exact
	Normalized string // lower-cased, accents removed, white space collapsed: for default and :contains
}

// TokenValue is one code: from a code/string/id/boolean primitive (System empty), a Coding, each
// Coding of a CodeableConcept, an Identifier (System, Value as Code), or a ContactPoint (its
// value as Code).
type TokenValue struct {
	Code   string
	System string
	Value  string // the code, identifier value, "true"/"false"
	Text   string // for :text: Coding.display, CodeableConcept.text, Identifier.type.text
}

// DateValue is the range of instants a date, dateTime, instant, Period or Timing covers:
// "2013" is [2013-01-01T00:00:00Z, 2014-01-01T00:00:00Z). Low is inclusive, High exclusive.
// Open ends (a Period without start or end) are MinTime and MaxTime. Values without a time
// zone are taken as UTC.
type DateValue struct {
	Code string
	Low  time.Time
	High time.Time
}

// Bounds for open-ended ranges.
var (
	MinTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// ReferenceValue is one reference: a relative "Patient/123" gives Type and ID; an absolute
// URL gives URL and, when it ends in Type/id, Type and ID too; a canonical gives URL (and
// Version after a "|").
type ReferenceValue struct {
	Code    string
	Type    string
	ID      string
	URL     string
	Version string
}

// NumberValue is a decimal or integer. Low and High are the range its precision implies
// ("100" is [99.5, 100.5)), for eq searches.
type NumberValue struct {
	Code  string
	Value float64
	Low   float64
	High  float64
}

// QuantityValue is a Quantity, Age, Duration, Distance, Count, SimpleQuantity or Money (Unit is
// the currency), or a Range (Low and High from its ends, with the open end infinite).
type QuantityValue struct {
	Code   string
	Value  float64 // for a Range, the midpoint is not used: see Low/High
	Low    float64
	High   float64
	System string
	Unit   string // Quantity.code, else Quantity.unit
}

// URIValue is a uri, url or canonical.
type URIValue struct {
	Code  string
	Value string
}
