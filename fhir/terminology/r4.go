package terminology

import (
	"path"
	"strings"

	apb "github.com/google/fhir/go/proto/google/fhir/proto/annotations_go_proto"
	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	vpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/valuesets_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Every R4 resource's protos, whose coded fields name their value sets.
	_ "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
)

// R4Version is the version of the specification AddR4's definitions come from.
const R4Version = "4.0.1"

// r4Source names the definitions AddR4 adds, in $lookup's answers.
const r4Source = "FHIR R4 4.0.1, as carried by google/fhir (codes.proto, valuesets.proto)"

// AddR4 adds the code systems and value sets of R4's required bindings as google/fhir's R4
// protos carry them, the ones the parser already holds every write to: each code system of
// codes.proto with the value set of all its codes, and each value set of valuesets.proto
// (codes drawn from several systems). Their ids are the last segment of their URLs
// (administrative-gender). The protos keep no displays, so these concepts have none.
func (s *Server) AddR4() error {
	msgs := cpb.File_proto_google_fhir_proto_r4_core_codes_proto.Messages()
	for i := 0; i < msgs.Len(); i++ {
		m := msgs.Get(i)
		if m.Enums().Len() == 0 {
			continue
		}
		enum := m.Enums().Get(0)
		system, _ := proto.GetExtension(enum.Options(), apb.E_FhirCodeSystemUrl).(string)
		if system == "" || s.systems[system] != nil {
			continue // several Code messages share one code system
		}
		cs := &CodeSystem{ID: path.Base(system), URL: system, Version: R4Version, Name: string(m.Name()), Source: r4Source}
		for _, code := range enumCodes(enum) {
			cs.Concepts = append(cs.Concepts, &Concept{Code: code, Properties: map[string][]string{}})
		}
		if err := s.AddCodeSystem(cs); err != nil {
			return err
		}
	}
	// The value sets bound to coded elements: a resource's field message names its value set,
	// and the enum of its value is a whole code system's.
	var walkErr error
	var walk func(protoreflect.MessageDescriptors)
	walk = func(list protoreflect.MessageDescriptors) {
		for i := 0; i < list.Len() && walkErr == nil; i++ {
			m := list.Get(i)
			walk(m.Messages())
			url, _ := proto.GetExtension(m.Options(), apb.E_FhirValuesetUrl).(string)
			value := m.Fields().ByName("value")
			if url == "" || s.valueSets[url] != nil || value == nil || value.Enum() == nil {
				continue
			}
			system, _ := proto.GetExtension(value.Enum().Options(), apb.E_FhirCodeSystemUrl).(string)
			if system == "" || s.systems[system] == nil {
				continue // a value set of several systems: valuesets.proto's, below
			}
			vs := &ValueSet{ID: path.Base(url), URL: url, Version: R4Version, Name: string(m.Name())}
			vs.compose.Include = []composeRule{{System: system}}
			walkErr = s.addValueSet(vs)
		}
	}
	protoregistry.GlobalFiles.RangeFilesByPackage("google.fhir.r4.core", func(f protoreflect.FileDescriptor) bool {
		walk(f.Messages())
		return walkErr == nil
	})
	if walkErr != nil {
		return walkErr
	}
	vsMsgs := vpb.File_proto_google_fhir_proto_r4_core_valuesets_proto.Messages()
	for i := 0; i < vsMsgs.Len(); i++ {
		m := vsMsgs.Get(i)
		if m.Enums().Len() == 0 {
			continue
		}
		enum := m.Enums().Get(0)
		url, _ := proto.GetExtension(enum.Options(), apb.E_EnumValuesetUrl).(string)
		if url == "" {
			url, _ = proto.GetExtension(m.Options(), apb.E_FhirValuesetUrl).(string)
		}
		if url == "" || s.valueSets[url] != nil {
			continue
		}
		vs := &ValueSet{ID: path.Base(url), URL: url, Version: R4Version, Name: string(m.Name())}
		bySystem := map[string]int{}
		values := enum.Values()
		for j := 0; j < values.Len(); j++ {
			v := values.Get(j)
			if v.Number() == 0 {
				continue // INVALID_UNINITIALIZED
			}
			code := enumCode(v)
			system, _ := proto.GetExtension(v.Options(), apb.E_SourceCodeSystem).(string)
			if system == "" {
				continue
			}
			k, ok := bySystem[system]
			if !ok {
				k = len(vs.compose.Include)
				bySystem[system] = k
				vs.compose.Include = append(vs.compose.Include, composeRule{System: system})
			}
			rule := &vs.compose.Include[k]
			rule.Concept = append(rule.Concept, struct {
				Code    string `json:"code"`
				Display string `json:"display"`
			}{Code: code})
		}
		if len(vs.compose.Include) == 0 {
			continue
		}
		// A value set drawing on a code system google/fhir does not define on its own gets
		// that system from the value set's own codes.
		for _, rule := range vs.compose.Include {
			if s.systems[rule.System] == nil {
				cs := &CodeSystem{ID: path.Base(rule.System), URL: rule.System, Source: r4Source + " (only the codes its value sets use)"}
				if err := s.AddCodeSystem(cs); err != nil {
					return err
				}
			}
			cs := s.systems[rule.System]
			for _, c := range rule.Concept {
				if cs.byCode[c.Code] == nil {
					con := &Concept{Code: c.Code, Properties: map[string][]string{}}
					cs.Concepts = append(cs.Concepts, con)
					cs.byCode[c.Code] = con
				}
			}
		}
		if err := s.addValueSet(vs); err != nil {
			return err
		}
	}
	return nil
}

// enumCodes is the FHIR codes of a google/fhir code enum, in order, without its
// INVALID_UNINITIALIZED: the original code where the enum name had to differ from it, else
// the name lower-cased with "-" for "_", as google/fhir itself reads them.
func enumCodes(enum protoreflect.EnumDescriptor) []string {
	values := enum.Values()
	var out []string
	for i := 0; i < values.Len(); i++ {
		v := values.Get(i)
		if v.Number() == 0 {
			continue
		}
		out = append(out, enumCode(v))
	}
	return out
}

func enumCode(v protoreflect.EnumValueDescriptor) string {
	if orig, _ := proto.GetExtension(v.Options(), apb.E_FhirOriginalCode).(string); orig != "" {
		return orig
	}
	return strings.ReplaceAll(strings.ToLower(string(v.Name())), "_", "-")
}
