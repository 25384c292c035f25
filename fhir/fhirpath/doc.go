// Package fhirpath evaluates the subset of FHIRPath that FHIR R4 search parameters are
// written in, over resources decoded from JSON (encoding/json with UseNumber: objects are
// map[string]any, arrays []any, numbers json.Number).
//
// Compile an expression once and evaluate it many times:
//
//	e, err := fhirpath.Compile("Observation.subject.where(resolve() is Patient)")
//	nodes, err := e.Evaluate(observation)
//
// Every resulting Node carries its FHIR type ("Reference", "CodeableConcept", "dateTime",
// ...), taken from the R4 type system that the package derives from google/fhir's
// generated protos (schema.go); JSON alone does not say whether an object is a Coding or
// an Identifier.
//
// # Supported syntax
//
//   - Paths: Patient.name.given; arrays flatten, missing elements give an empty
//     collection. A capitalized name starting a path is a type and keeps the input only
//     if it is of that type, so in "Account.subject | Observation.subject" each branch
//     applies to its own resource type. `Delimited` names.
//   - Choice elements by their FHIR name: Observation.value finds valueQuantity,
//     valueString, ... and types each value accordingly.
//   - Literals: 'strings' (with \-escapes), integers and decimals, true, false, {}.
//   - $this, and %resource (%context and %rootResource are the same: evaluation always
//     starts at the resource).
//   - Operators: | (union, without duplicates), = and != (on single items; values of
//     different kinds are unequal), and and or (three-valued), is and as with a type name,
//     optionally FHIR.-qualified. Parentheses, and indexers [n].
//   - Functions: where(criteria), exists([criteria]), empty(), not(), first(), last(),
//     count(), as(T), is(T), ofType(T), resolve(), extension(url).
//
// Anything else (comparison, arithmetic, string functions, date literals, other
// variables) is a *CompileError, as is a type name that is not an R4 type.
//
// # Deliberate differences from FHIRPath
//
//   - `as` (operator and function) filters a collection like ofType, instead of being an
//     error on more than one item: the specification's own search expressions apply it
//     to collections (ActivityDefinition.useContext.value as Quantity).
//   - Primitive types are only themselves for is/as/ofType: R4 derives code from string
//     and canonical from uri, but "(ConceptMap.source as uri)" must select sourceUri and
//     not sourceCanonical. Complex types do derive (an Age is a Quantity) and resources
//     are DomainResources and Resources.
//   - resolve() never fetches anything. A "#id" reference resolves to the contained
//     resource; any other reference to a stand-in node whose type is the reference's
//     target type ("Patient/1", ".../Patient/1", or else Reference.type). That is all
//     "where(resolve() is Patient)" needs.
//   - Extensions on primitive values (the "_birthDate" properties of JSON) are not
//     visible.
package fhirpath
