package fhir

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// checkParsed finds what google/fhir accepts but R4 does not: resource ids "." and ".."
// (R4's id pattern allows them, but they are path segments in a URL) and dates, dateTimes
// and instants before the year 1 (R4's regular expressions start years at 0001; Go's parser
// reads 0000). Each problem is an issue located by FHIRPath, as google/fhir's are.
func checkParsed(msg proto.Message) []Issue {
	root := msg.ProtoReflect()
	oneof := root.Descriptor().Oneofs().Get(0)
	f := root.WhichOneof(oneof)
	if f == nil {
		return nil
	}
	var issues []Issue
	walkParsed(root.Get(f).Message(), string(f.Message().Name()), &issues)
	return issues
}

var (
	dateName     = (&dpb.Date{}).ProtoReflect().Descriptor().FullName()
	dateTimeName = (&dpb.DateTime{}).ProtoReflect().Descriptor().FullName()
	instantName  = (&dpb.Instant{}).ProtoReflect().Descriptor().FullName()
	idName       = (&dpb.Id{}).ProtoReflect().Descriptor().FullName()
)

// walkParsed checks m, at path, and everything in it. Paths use the JSON names: a choice
// element's type is appended to its name (Observation.effectiveDateTime), a contained
// resource is its own element (Patient.contained[0].birthDate).
func walkParsed(m protoreflect.Message, path string, issues *[]Issue) {
	desc := m.Descriptor()
	switch desc.FullName() {
	case "google.protobuf.Any": // google/fhir keeps contained resources packed
		if a, ok := m.Interface().(*anypb.Any); ok {
			if inner, err := a.UnmarshalNew(); err == nil {
				walkParsed(inner.ProtoReflect(), path, issues)
			}
		}
		return
	case dateName, dateTimeName, instantName:
		us := m.Get(desc.Fields().ByName("value_us")).Int()
		tz := m.Get(desc.Fields().ByName("timezone")).String()
		if time.UnixMicro(us).In(zone(tz)).Year() < 1 {
			*issues = append(*issues, Issue{Severity: Error, Code: Value, Expression: []string{path},
				Diagnostics: "the year is 0000: FHIR dates and times start at the year 0001"})
		}
		return
	}
	choice := desc.Oneofs().Len() == 1 && desc.Oneofs().Get(0).Name() == "choice"
	contained := desc.Name() == "ContainedResource"
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		var child string
		switch {
		case contained:
			child = path
		case choice:
			name := fd.JSONName()
			child = path + strings.ToUpper(name[:1]) + name[1:]
		default:
			child = path + "." + fd.JSONName()
		}
		if fd.IsList() {
			list := v.List()
			for i := 0; i < list.Len(); i++ {
				walkParsed(list.Get(i).Message(), child+"["+strconv.Itoa(i)+"]", issues)
			}
			return true
		}
		if fd.JSONName() == "id" && fd.Message().FullName() == idName && !contained {
			id := v.Message().Get(fd.Message().Fields().ByName("value")).String()
			if id == "." || id == ".." {
				*issues = append(*issues, Issue{Severity: Error, Code: Value, Expression: []string{child},
					Diagnostics: fmt.Sprintf("%q cannot be an id: in a URL it is a path segment, not a name", id)})
			}
		}
		walkParsed(v.Message(), child, issues)
		return true
	})
}

// zone reads google/fhir's time zone of a parsed date: "Z", "UTC", an offset "+01:00" or a
// zone name.
func zone(tz string) *time.Location {
	switch {
	case tz == "" || tz == "Z" || tz == "UTC":
		return time.UTC
	case len(tz) == 6 && (tz[0] == '+' || tz[0] == '-') && tz[3] == ':':
		h, err1 := strconv.Atoi(tz[1:3])
		m, err2 := strconv.Atoi(tz[4:6])
		if err1 == nil && err2 == nil {
			offset := (h*60 + m) * 60
			if tz[0] == '-' {
				offset = -offset
			}
			return time.FixedZone(tz, offset)
		}
	}
	if loc, err := time.LoadLocation(tz); err == nil {
		return loc
	}
	return time.UTC
}
