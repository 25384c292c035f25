package fhirpath

import (
	"sort"
	"strings"
	"sync"

	apb "github.com/google/fhir/go/proto/google/fhir/proto/annotations_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// FHIR JSON carries no types, yet FHIRPath needs them: `value as Quantity` keeps only the
// values that are Quantities, and search extraction turns a CodeableConcept into tokens
// differently from an Identifier. The schema below says, for every R4 type, which JSON
// properties it has and of which type each is. It is derived once from google/fhir's
// generated R4 protos, which mirror the specification's StructureDefinitions element by
// element, so no type table is written (or kept up to date) by hand.

// typeInfo describes one FHIR type: a resource, a complex or primitive datatype, or a
// backbone element nested in one of those.
type typeInfo struct {
	name      string // FHIR type name: "Patient", "HumanName", "dateTime", "BackboneElement"
	base      *typeInfo
	primitive bool
	resource  bool
	elements  map[string]*element // by JSON property name; choice elements by their stem ("value")
}

// is reports whether t is the type called name or derives from it: an Age is a Quantity,
// a Patient is a DomainResource and a Resource.
//
// Primitive types are only themselves. R4 does define code, id and markdown as
// specializations of string, and url, canonical, oid and uuid of uri, but the only use
// search expressions make of `as` on primitives is to pick one branch of a choice type:
// "(ConceptMap.source as uri)" means sourceUri, and must not also select sourceCanonical.
func (t *typeInfo) is(name string) bool {
	for ; t != nil; t = t.base {
		if t.name == name {
			return true
		}
	}
	return false
}

// element is one property of a complex type.
type element struct {
	name string
	typ  *typeInfo
	// choices lists the JSON properties a choice element value[x] is stored under
	// (valueQuantity, valueString, ...) with the type each holds. Empty for other elements.
	choices []choice
	// inlineResource is set for properties holding a whole resource (contained,
	// Bundle.entry.resource, Parameters.parameter.resource): its type is whatever its
	// "resourceType" says.
	inlineResource bool
}

type choice struct {
	key string // "valueQuantity"
	typ *typeInfo
}

// schemaData is the complete R4 type system, built once.
type schemaData struct {
	types         map[string]*typeInfo // every named FHIR type, by name
	resources     map[string]*typeInfo // resource types only
	resourceNames []string             // sorted
	byProto       map[protoreflect.FullName]*typeInfo
	boolean       *typeInfo // the types of values expressions make themselves
	integer       *typeInfo
	trueColl      []Node // {true} and {false}, shared (see boolean)
	falseColl     []Node
}

var (
	schemaOnce sync.Once
	theSchema  *schemaData
)

func schema() *schemaData {
	schemaOnce.Do(func() { theSchema = buildSchema() })
	return theSchema
}

// The FHIR base types, above anything google/fhir generates a message for.
var (
	resourceBase       = &typeInfo{name: "Resource", resource: true}
	domainResourceBase = &typeInfo{name: "DomainResource", base: resourceBase, resource: true}
)

// quantityProfiles are the datatypes that are constrained Quantities.
var quantityProfiles = map[string]bool{
	"Age": true, "Count": true, "Distance": true, "Duration": true,
	"SimpleQuantity": true, "MoneyQuantity": true,
}

// resourcesOutsideDomainResource are the resource types that derive from Resource directly.
var resourcesOutsideDomainResource = map[string]bool{"Bundle": true, "Binary": true, "Parameters": true}

type schemaBuilder struct {
	s        *schemaData
	element  *typeInfo
	backbone *typeInfo
}

func buildSchema() *schemaData {
	b := &schemaBuilder{s: &schemaData{
		types:     map[string]*typeInfo{},
		resources: map[string]*typeInfo{},
		byProto:   map[protoreflect.FullName]*typeInfo{},
	}}
	b.s.types[resourceBase.name] = resourceBase
	b.s.types[domainResourceBase.name] = domainResourceBase

	// Element and BackboneElement first: the other types derive from them.
	datatypes := dpb.File_proto_google_fhir_proto_r4_core_datatypes_proto.Messages()
	b.element = b.typeOf(datatypes.ByName("Element"))
	b.backbone = b.typeOf(datatypes.ByName("BackboneElement"))
	for i := 0; i < datatypes.Len(); i++ {
		b.typeOf(datatypes.Get(i))
	}
	for name := range quantityProfiles {
		b.s.types[name].base = b.s.types["Quantity"]
	}
	// Types first reached while Element itself was being built (Element.extension leads to
	// every datatype) could not point at Element yet.
	for _, t := range b.s.byProto {
		if t.base != nil || t == b.element {
			continue
		}
		if t.name == "BackboneElement" && t != b.backbone {
			t.base = b.backbone
		} else {
			t.base = b.element
		}
	}

	contained := (&bcrpb.ContainedResource{}).ProtoReflect().Descriptor().Oneofs().Get(0).Fields()
	for i := 0; i < contained.Len(); i++ {
		t := b.typeOf(contained.Get(i).Message())
		b.s.resources[t.name] = t
		b.s.resourceNames = append(b.s.resourceNames, t.name)
	}
	sort.Strings(b.s.resourceNames)
	b.s.boolean, b.s.integer = b.s.types["boolean"], b.s.types["integer"]
	b.s.trueColl = []Node{newNode(true, b.s.boolean)}
	b.s.falseColl = []Node{newNode(false, b.s.boolean)}
	return b.s
}

// typeOf returns the type a proto message stands for, building it (and, recursively, the
// types of its fields) the first time.
func (b *schemaBuilder) typeOf(md protoreflect.MessageDescriptor) *typeInfo {
	if t, ok := b.s.byProto[md.FullName()]; ok {
		return t
	}
	t := &typeInfo{}
	// Registered before the fields are walked: types are recursive (Extension holds
	// Extensions, Bundle.entry holds resources).
	b.s.byProto[md.FullName()] = t

	url, _ := proto.GetExtension(md.Options(), apb.E_FhirStructureDefinitionUrl).(string)
	kind, _ := proto.GetExtension(md.Options(), apb.E_StructureDefinitionKind).(apb.StructureDefinitionKindValue)
	switch {
	case md.FullName() == "google.fhir.r4.core.ReferenceId":
		// The typed ids google/fhir splits Reference.reference into: never in JSON.
		return b.alias(md, "string")
	case isCodeEnum(md):
		// Codes bound to a required value set are generated as a wrapper around a
		// proto enum (Patient.GenderCode); in FHIR they are all plain codes.
		return b.alias(md, "code")
	case strings.HasPrefix(url, "http://hl7.org/fhir/StructureDefinition/"):
		t.name = url[strings.LastIndexByte(url, '/')+1:]
		switch kind {
		case apb.StructureDefinitionKindValue_KIND_PRIMITIVE_TYPE:
			t.primitive = true
			t.base = b.element
		case apb.StructureDefinitionKindValue_KIND_RESOURCE:
			t.resource = true
			t.base = domainResourceBase
			if resourcesOutsideDomainResource[t.name] {
				t.base = resourceBase
			}
		default:
			if t.name != "Element" {
				t.base = b.element
			}
		}
		if existing, ok := b.s.types[t.name]; ok && existing != t {
			// A second message for the same FHIR type: share the first.
			b.s.byProto[md.FullName()] = existing
			return existing
		}
		b.s.types[t.name] = t
	default:
		// A backbone element (Observation.component) or an element nested in a
		// datatype (Timing.repeat): FHIR gives these no type name of their own.
		if md.Fields().ByName("modifier_extension") != nil {
			t.name, t.base = "BackboneElement", b.backbone
		} else {
			t.name, t.base = "Element", b.element
		}
	}
	if t.primitive {
		return t
	}

	t.elements = map[string]*element{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		if f.Message() == nil {
			continue
		}
		el := &element{name: f.JSONName()}
		switch fm := f.Message(); {
		case t.name == "Reference" && f.ContainingOneof() != nil:
			// google/fhir splits Reference.reference into one field per target type;
			// in JSON it is a single string.
			if t.elements["reference"] != nil {
				continue
			}
			el.name = "reference"
			el.typ = b.typeOf(dpb.File_proto_google_fhir_proto_r4_core_datatypes_proto.Messages().ByName("String"))
		case fm.FullName() == "google.protobuf.Any" || fm.FullName() == "google.fhir.r4.core.ContainedResource":
			el.inlineResource = true
		case isChoice(fm):
			oneof := fm.Oneofs().Get(0).Fields()
			for j := 0; j < oneof.Len(); j++ {
				of := oneof.Get(j)
				el.choices = append(el.choices, choice{
					key: el.name + upperFirst(of.JSONName()),
					typ: b.typeOf(of.Message()),
				})
			}
		default:
			el.typ = b.typeOf(fm)
		}
		t.elements[el.name] = el
	}
	return t
}

// alias records md as another message for the named type (created as a primitive when it
// is not known yet).
func (b *schemaBuilder) alias(md protoreflect.MessageDescriptor, name string) *typeInfo {
	t, ok := b.s.types[name]
	if !ok {
		t = &typeInfo{name: name, primitive: true, base: b.element}
		b.s.types[name] = t
	}
	b.s.byProto[md.FullName()] = t
	return t
}

// isCodeEnum tells a google/fhir code wrapper: a message with no StructureDefinition of its
// own whose value is a proto scalar, an enum (Patient.GenderCode) or, for codes bound to
// large value sets, a string (Money.CurrencyCode, Attachment.ContentTypeCode).
func isCodeEnum(md protoreflect.MessageDescriptor) bool {
	if url, _ := proto.GetExtension(md.Options(), apb.E_FhirStructureDefinitionUrl).(string); url != "" {
		return false
	}
	v := md.Fields().ByName("value")
	return v != nil && v.Message() == nil
}

// isChoice tells a google/fhir choice message (Observation.ValueX): one oneof named
// "choice" holding every allowed type.
func isChoice(md protoreflect.MessageDescriptor) bool {
	if is, _ := proto.GetExtension(md.Options(), apb.E_IsChoiceType).(bool); is {
		return true
	}
	return md.Oneofs().Len() == 1 && md.Oneofs().Get(0).Name() == "choice"
}

func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// ResourceTypes lists every R4 resource type, sorted.
func ResourceTypes() []string {
	return append([]string(nil), schema().resourceNames...)
}

// IsResourceType tells whether name is an R4 resource type such as "Patient" (the abstract
// Resource and DomainResource are not).
func IsResourceType(name string) bool {
	_, ok := schema().resources[name]
	return ok
}

// TypeIs reports whether typ, a FHIR type name as in Node.Type, is base or derives from it,
// as `is` decides: TypeIs("Age", "Quantity") and TypeIs("Patient", "Resource") are true,
// TypeIs("code", "string") is false (see typeInfo.is).
func TypeIs(typ, base string) bool {
	t, ok := schema().types[typ]
	return ok && t.is(strings.TrimPrefix(base, "FHIR."))
}
