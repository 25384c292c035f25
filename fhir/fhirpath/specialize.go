package fhirpath

// ForResourceType returns the expression as it applies to resources of one type: the
// branches of a top-level union that start with a different resource type are dropped.
// The result evaluates exactly like the original on such resources, only faster: the
// specification writes one expression for a parameter shared by many types
// ("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | ..."), and
// evaluating it whole for every resource would walk dozens of branches that cannot match.
// String still returns the original text.
func (e *Expression) ForResourceType(resourceType string) *Expression {
	t, ok := schema().resources[resourceType]
	if !ok {
		return e
	}
	root, keep := prune(e.root, t)
	if !keep {
		root = &literal{empty: true}
	}
	return &Expression{src: e.src, root: root}
}

// IsEmpty reports whether the expression is known to give nothing, whatever the input:
// the literal {} or what ForResourceType leaves when no branch applies.
func (e *Expression) IsEmpty() bool {
	l, ok := e.root.(*literal)
	return ok && l.empty
}

// prune drops the union branches that cannot apply to t; keep is false when nothing can.
func prune(x expr, t *typeInfo) (pruned expr, keep bool) {
	if u, ok := x.(*union); ok {
		left, keepLeft := prune(u.left, t)
		right, keepRight := prune(u.right, t)
		switch {
		case keepLeft && keepRight:
			if left == u.left && right == u.right {
				return u, true
			}
			return &union{left: left, right: right}, true
		case keepLeft:
			return distinctOf(left), true
		case keepRight:
			return distinctOf(right), true
		}
		return nil, false
	}
	if f := leadingTypeFilter(x); f != nil && !t.is(f.typeName) {
		return nil, false
	}
	return x, true
}

// distinctOf keeps what a union guaranteed after one of its sides is dropped: no
// duplicates ("Patient.name.given | Practitioner.name.given" gives "Peter" once even when
// two names have it).
func distinctOf(x expr) expr {
	switch x.(type) {
	case *union, *distinct:
		return x
	}
	return &distinct{operand: x}
}

// distinct removes duplicate items, as a union does.
type distinct struct{ operand expr }

func (d *distinct) eval(ev *evaluator, input []Node) ([]Node, error) {
	items, err := d.operand.eval(ev, input)
	if err != nil || len(items) < 2 {
		return items, err
	}
	return distinctNodes(items), nil
}

// leadingTypeFilter returns the type name a path starts with ("Patient" in
// "Patient.name.where(use='official')"), or nil.
func leadingTypeFilter(x expr) *typeFilter {
	for {
		switch n := x.(type) {
		case *typeFilter:
			return n
		case *child:
			x = n.target
		case *indexer:
			x = n.target
		case *call:
			x = n.target
		case *typeOp:
			x = n.operand
		case *distinct:
			x = n.operand
		default:
			return nil
		}
		if x == nil {
			return nil
		}
	}
}
