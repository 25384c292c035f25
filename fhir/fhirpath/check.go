package fhirpath

import "fmt"

// Check verifies the expression against the R4 type system for resources of one type:
// every element a path names must exist on at least one of the types it can be applied
// to, and every `as`/`ofType` must be able to keep something. Evaluation itself never
// fails on such mistakes (a path that names nothing is simply empty), so Check is what
// catches a typo, or an element that R4 does not have, before it silently indexes nothing.
func (e *Expression) Check(resourceType string) error {
	t, ok := schema().resources[resourceType]
	if !ok {
		return fmt.Errorf("fhirpath: unknown resource type %q", resourceType)
	}
	c := checker{root: t}
	if _, err := c.types(e.ForResourceType(resourceType).root, []*typeInfo{t}); err != nil {
		return fmt.Errorf("fhirpath: %s: on %s: %w", e.src, resourceType, err)
	}
	return nil
}

type checker struct{ root *typeInfo }

// types infers the types an expression can yield for inputs of the given types. A nil
// entry is a value of unknown type (a contained resource, say), on which anything goes.
func (c *checker) types(x expr, input []*typeInfo) ([]*typeInfo, error) {
	s := schema()
	switch n := x.(type) {
	case *typeFilter:
		return keepTypes(input, n.typeName), nil
	case *child:
		in, err := c.target(n.target, input)
		if err != nil {
			return nil, err
		}
		var out []*typeInfo
		found := false
		for _, t := range in {
			if t == nil || t == resourceBase || t == domainResourceBase {
				out, found = append(out, nil), true
				continue
			}
			el := t.elements[n.name]
			if el == nil {
				continue
			}
			found = true
			switch {
			case el.inlineResource:
				out = append(out, nil)
			case el.choices != nil:
				for _, ch := range el.choices {
					out = append(out, ch.typ)
				}
			default:
				out = append(out, el.typ)
			}
		}
		if !found && len(in) > 0 {
			return nil, fmt.Errorf("no element %q on %s", n.name, typeNames(in))
		}
		return out, nil
	case *distinct:
		return c.types(n.operand, input)
	case *indexer:
		if _, err := c.types(n.index, input); err != nil {
			return nil, err
		}
		return c.types(n.target, input)
	case *literal:
		if n.empty {
			return nil, nil
		}
		return []*typeInfo{n.node.info}, nil
	case *this:
		return input, nil
	case *resourceVar:
		return []*typeInfo{c.root}, nil
	case *union:
		left, err := c.types(n.left, input)
		if err != nil {
			return nil, err
		}
		right, err := c.types(n.right, input)
		return append(left, right...), err
	case *equality:
		return c.boolean(input, n.left, n.right)
	case *logic:
		return c.boolean(input, n.left, n.right)
	case *typeOp:
		in, err := c.types(n.operand, input)
		if err != nil || n.op == "is" {
			return []*typeInfo{s.boolean}, err
		}
		return c.cast(in, n.typeName)
	case *call:
		in, err := c.target(n.target, input)
		if err != nil {
			return nil, err
		}
		for _, a := range n.args {
			// Criteria are evaluated for each item in turn.
			if _, err := c.types(a, in); err != nil {
				return nil, err
			}
		}
		switch n.fn {
		case fnWhere, fnFirst, fnLast:
			return in, nil
		case fnAs, fnOfType:
			return c.cast(in, n.typeName)
		case fnCount:
			return []*typeInfo{s.integer}, nil
		case fnResolve:
			return []*typeInfo{nil}, nil
		case fnExtension:
			return []*typeInfo{s.types["Extension"]}, nil
		default:
			return []*typeInfo{s.boolean}, nil
		}
	}
	return nil, fmt.Errorf("cannot check %T", x)
}

func (c *checker) target(target expr, input []*typeInfo) ([]*typeInfo, error) {
	if target == nil {
		return input, nil
	}
	return c.types(target, input)
}

func (c *checker) boolean(input []*typeInfo, operands ...expr) ([]*typeInfo, error) {
	for _, o := range operands {
		if _, err := c.types(o, input); err != nil {
			return nil, err
		}
	}
	return []*typeInfo{schema().boolean}, nil
}

// cast is `as`/ofType: it must be able to keep at least one of the candidate types.
func (c *checker) cast(in []*typeInfo, typeName string) ([]*typeInfo, error) {
	out := keepTypes(in, typeName)
	if len(out) == 0 && len(in) > 0 {
		return nil, fmt.Errorf("%s is never a %s", typeNames(in), typeName)
	}
	return out, nil
}

// keepTypes keeps the types that are typeName, and unknown types as typeName.
func keepTypes(in []*typeInfo, typeName string) []*typeInfo {
	var out []*typeInfo
	for _, t := range in {
		switch {
		case t == nil:
			out = append(out, schema().types[typeName])
		case t.is(typeName):
			out = append(out, t)
		}
	}
	return out
}

func typeNames(ts []*typeInfo) string {
	s := ""
	seen := map[string]bool{}
	for _, t := range ts {
		name := "?"
		if t != nil {
			name = t.name
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		if s != "" {
			s += " or "
		}
		s += name
	}
	return s
}
