package fhirpath

import (
	"sync"
)

// Element is one value of a resource met by Walk.
type Element struct {
	// Path locates the value in FHIRPath: Patient.name[0].given[1]. An array is met once as a
	// whole (at Patient.name) and then item by item (Patient.name[0], ...).
	Path string
	// DefPath is the element's path in its resource's definition, without indexes:
	// Patient.contact.name. It starts again at each contained or inline resource.
	DefPath string
	// TypePath is the element's path from the nearest named type: HumanName.given for
	// Patient.contact.name.given, Timing.repeat for Observation.effectiveTiming.repeat.
	TypePath string
	// Node is the value with its FHIR type. Its Type is "" for a property the R4 type
	// system does not know. A primitive's extension object (the JSON "_birthDate") is an
	// "Element" at the primitive's own path.
	Node Node
	// Key is the JSON property the value was found under ("valueQuantity", "_birthDate"),
	// empty for array items and for the resource itself.
	Key string
}

// Walk visits the resource and every value inside it, depth first: objects, arrays (as a
// whole, then each item) and primitives, including null, empty arrays and empty objects, so
// that a validator can refuse them. Contained and inline resources (Bundle.entry.resource)
// are walked as resources of their own type. Properties are met in map order.
//
// visit returns whether to descend into the value.
func Walk(resource map[string]any, visit func(Element) bool) error {
	root, err := ResourceNode(resource)
	if err != nil {
		return err
	}
	w := walker{visit: visit}
	w.resource(root, root.Type)
	return nil
}

type walker struct {
	visit func(Element) bool
}

func (w *walker) resource(n Node, path string) {
	e := Element{Path: path, DefPath: n.Type, TypePath: n.Type, Node: n}
	if !w.visit(e) {
		return
	}
	w.object(n, e)
}

// object walks the properties of a resource or complex value.
func (w *walker) object(n Node, at Element) {
	obj, ok := n.Value.(map[string]any)
	if !ok || n.info == nil {
		return
	}
	props := propertiesOf(n.info)
	for key, v := range obj {
		if key == "resourceType" && n.info.resource {
			continue
		}
		name, primitiveExt := key, false
		if len(key) > 1 && key[0] == '_' {
			name, primitiveExt = key[1:], true
		}
		p, known := props[name]
		e := Element{
			Path:     at.Path + "." + name,
			DefPath:  at.DefPath + "." + p.defName(name),
			TypePath: at.TypePath + "." + p.defName(name),
			Key:      key,
		}
		var t *typeInfo
		switch {
		case !known:
		case primitiveExt:
			t = schema().types["Element"]
		default:
			t = p.typ
		}
		w.value(v, t, known && p.inlineResource && !primitiveExt, e)
	}
}

// value visits v found at e, with its declared type t (nil when unknown), descending into
// arrays and objects.
func (w *walker) value(v any, t *typeInfo, inline bool, e Element) {
	e.Node = Node{Value: v}
	if t != nil {
		e.Node = newNode(v, t)
	}
	if !w.visit(e) {
		return
	}
	switch v := v.(type) {
	case []any:
		for i, item := range v {
			ie := e
			ie.Path = e.Path + "[" + itoa(i) + "]"
			ie.Key = ""
			w.value(item, t, inline, ie)
		}
	case map[string]any:
		if inline {
			if n, err := ResourceNode(v); err == nil {
				ie := Element{Path: e.Path, DefPath: n.Type, TypePath: n.Type, Node: n}
				if w.visit(ie) {
					w.object(n, ie)
				}
			}
			return
		}
		if t == nil || t.primitive {
			return
		}
		at := e
		if t.name != "Element" && t.name != "BackboneElement" {
			at.TypePath = t.name
		}
		w.object(e.Node, at)
	}
}

// property is what a JSON property name of a type stands for.
type property struct {
	typ            *typeInfo
	stem           string // the choice element's name ("value" for valueQuantity), else ""
	inlineResource bool
}

// defName is the property's name in a definition path: a choice element's stem.
func (p property) defName(key string) string {
	if p.stem != "" {
		return p.stem
	}
	return key
}

var (
	propertiesOnce sync.Once
	propertyTables map[*typeInfo]map[string]property
)

// propertiesOf lists a type's JSON properties, choice elements under each of their names.
func propertiesOf(t *typeInfo) map[string]property {
	propertiesOnce.Do(func() {
		s := schema()
		propertyTables = map[*typeInfo]map[string]property{}
		add := func(t *typeInfo) {
			if t.primitive || propertyTables[t] != nil {
				return
			}
			m := map[string]property{}
			for name, el := range t.elements {
				if el.choices != nil {
					for _, c := range el.choices {
						m[c.key] = property{typ: c.typ, stem: name}
					}
					continue
				}
				m[name] = property{typ: el.typ, inlineResource: el.inlineResource}
			}
			propertyTables[t] = m
		}
		for _, t := range s.byProto {
			add(t)
		}
		for _, t := range s.types {
			add(t)
		}
	})
	return propertyTables[t]
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	var b [20]byte
	p := len(b)
	for i > 0 {
		p--
		b[p] = byte('0' + i%10)
		i /= 10
	}
	return string(b[p:])
}
