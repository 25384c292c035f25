package fhirpath

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Node is one item of a FHIRPath collection: a value from the resource with its FHIR type.
//
// Value is what encoding/json (with UseNumber) decoded: map[string]any for resources and
// complex datatypes, and string, json.Number or bool for primitives. Nodes made by the
// expression itself (literals, the results of exists() or =) hold the same kinds.
// Type is the FHIR type name: "HumanName", "CodeableConcept", "Quantity", "Age",
// "dateTime", "code", "Patient", and "BackboneElement" or "Element" for elements that
// have no type of their own (Observation.component, Timing.repeat).
type Node struct {
	Value any
	Type  string
	info  *typeInfo
}

func newNode(value any, t *typeInfo) Node { return Node{Value: value, Type: t.name, info: t} }

// Evaluate runs the expression on a resource decoded from JSON with
// json.Decoder.UseNumber. The resource's type is its "resourceType" property. An error is
// returned for a resource of unknown type and for type errors the expression makes at run
// time (such as where() criteria that give more than one value); a path that leads
// nowhere is not an error but an empty result.
func (e *Expression) Evaluate(resource map[string]any) ([]Node, error) {
	root, err := ResourceNode(resource)
	if err != nil {
		return nil, err
	}
	return e.EvaluateNode(root)
}

// EvaluateNode runs the expression with root as both the input and %resource.
func (e *Expression) EvaluateNode(root Node) ([]Node, error) {
	if root.info == nil {
		return nil, errors.New("fhirpath: node was not made by this package")
	}
	ev := &evaluator{root: root}
	ev.input[0] = root
	out, err := e.root.eval(ev, ev.input[:])
	if err != nil {
		return nil, fmt.Errorf("fhirpath: %s: %w", e.src, err)
	}
	if len(out) == 1 && out[0].info == schema().boolean {
		// Possibly one of the shared {true} and {false}: the caller's must be its own.
		out = []Node{out[0]}
	}
	return out, nil
}

// ResourceNode wraps a resource decoded from JSON as a Node of its type.
func ResourceNode(resource map[string]any) (Node, error) {
	rt, _ := resource["resourceType"].(string)
	t, ok := schema().resources[rt]
	if !ok {
		if rt == "" {
			return Node{}, errors.New("fhirpath: resource has no resourceType")
		}
		return Node{}, fmt.Errorf("fhirpath: unknown resource type %q", rt)
	}
	return newNode(resource, t), nil
}

type evaluator struct {
	root  Node
	input [1]Node // the initial collection, allocated with the evaluator
}

// expr is a node of a compiled expression. eval computes its value for an input
// collection: the resource at the top, the current item inside where().
type expr interface {
	eval(ev *evaluator, input []Node) ([]Node, error)
}

type (
	// typeFilter is a capitalized name starting a path: the input items of that type.
	typeFilter struct{ typeName string }
	// child is navigation to the elements called name of every target item.
	child struct {
		target expr // nil: the input
		name   string
	}
	indexer struct{ target, index expr }
	literal struct {
		node  Node
		empty bool // {}
	}
	this        struct{}
	resourceVar struct{}
	union       struct{ left, right expr }
	equality    struct {
		negate      bool
		left, right expr
	}
	logic struct {
		and         bool // else or
		left, right expr
	}
	typeOp struct {
		op       string // "is" or "as"
		operand  expr
		typeName string
	}
	call struct {
		target   expr // nil: the input
		fn       function
		name     string
		args     []expr
		typeName string // for as(), is(), ofType()
	}
)

func (f *typeFilter) eval(_ *evaluator, input []Node) ([]Node, error) {
	for i, n := range input {
		if !n.info.is(f.typeName) {
			// Rare: filter into a new slice only when something must go.
			out := append([]Node(nil), input[:i]...)
			for _, m := range input[i+1:] {
				if m.info.is(f.typeName) {
					out = append(out, m)
				}
			}
			return out, nil
		}
	}
	return input, nil
}

func (c *child) eval(ev *evaluator, input []Node) ([]Node, error) {
	items, err := evalTarget(ev, c.target, input)
	if err != nil {
		return nil, err
	}
	var out []Node
	for _, item := range items {
		out = appendChildren(out, item, c.name)
	}
	return out, nil
}

// appendChildren appends the elements called name of item, flattening arrays and finding
// choice elements under whichever typed property (valueQuantity, ...) holds them.
func appendChildren(out []Node, item Node, name string) []Node {
	obj, ok := item.Value.(map[string]any)
	if !ok || item.info == nil {
		return out
	}
	el := item.info.elements[name]
	if el == nil {
		return out
	}
	if el.choices != nil {
		for _, c := range el.choices {
			if v, ok := obj[c.key]; ok {
				out = appendValues(out, v, c.typ)
			}
		}
		return out
	}
	v, ok := obj[name]
	if !ok {
		return out
	}
	if el.inlineResource {
		return appendResources(out, v)
	}
	return appendValues(out, v, el.typ)
}

func appendValues(out []Node, v any, t *typeInfo) []Node {
	switch v := v.(type) {
	case nil:
	case []any:
		out = slices.Grow(out, len(v))
		for _, item := range v {
			if item != nil {
				out = append(out, newNode(item, t))
			}
		}
	default:
		out = append(out, newNode(v, t))
	}
	return out
}

func appendResources(out []Node, v any) []Node {
	switch v := v.(type) {
	case []any:
		out = slices.Grow(out, len(v))
		for _, item := range v {
			out = appendResources(out, item)
		}
	case map[string]any:
		if n, err := ResourceNode(v); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func evalTarget(ev *evaluator, target expr, input []Node) ([]Node, error) {
	if target == nil {
		return input, nil
	}
	return target.eval(ev, input)
}

func (x *indexer) eval(ev *evaluator, input []Node) ([]Node, error) {
	items, err := x.target.eval(ev, input)
	if err != nil {
		return nil, err
	}
	idx, err := x.index.eval(ev, input)
	if err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return nil, nil
	}
	n, ok := integerValue(idx)
	if !ok {
		return nil, errors.New("index must be a single integer")
	}
	if n < 0 || n >= len(items) {
		return nil, nil
	}
	return items[n : n+1 : n+1], nil
}

func integerValue(c []Node) (int, bool) {
	if len(c) != 1 {
		return 0, false
	}
	num, ok := c[0].Value.(json.Number)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(num))
	return n, err == nil
}

func (l *literal) eval(*evaluator, []Node) ([]Node, error) {
	if l.empty {
		return nil, nil
	}
	return []Node{l.node}, nil
}

func (*this) eval(_ *evaluator, input []Node) ([]Node, error) { return input, nil }

func (*resourceVar) eval(ev *evaluator, _ []Node) ([]Node, error) { return []Node{ev.root}, nil }

func (u *union) eval(ev *evaluator, input []Node) ([]Node, error) {
	left, err := u.left.eval(ev, input)
	if err != nil {
		return nil, err
	}
	right, err := u.right.eval(ev, input)
	if err != nil {
		return nil, err
	}
	// Union removes duplicates, within each side too.
	return distinctNodes(append(append(make([]Node, 0, len(left)+len(right)), left...), right...)), nil
}

// distinctNodes keeps the first of each group of equal items. A few items are compared
// pairwise; more are grouped by a hash consistent with equal, so that a union over 100,000
// identifiers stays linear instead of making 5 billion comparisons.
func distinctNodes(items []Node) []Node {
	if len(items) <= smallDistinct {
		out := items[:0:0]
		for _, n := range items {
			if !containsEqual(out, n) {
				out = append(out, n)
			}
		}
		return out
	}
	seed := maphash.MakeSeed()
	buckets := make(map[uint64][]int, len(items))
	out := make([]Node, 0, len(items))
	for _, n := range items {
		h := hashValue(seed, n.Value)
		dup := false
		for _, i := range buckets[h] {
			if equal(out[i].Value, n.Value) {
				dup = true
				break
			}
		}
		if !dup {
			buckets[h] = append(buckets[h], len(out))
			out = append(out, n)
		}
	}
	return out
}

// smallDistinct is how many items distinctNodes compares pairwise before it hashes.
const smallDistinct = 16

// hashValue hashes a JSON value so that values equal by equal hash alike: numbers by their
// float value, objects whatever their key order.
func hashValue(seed maphash.Seed, v any) uint64 {
	switch v := v.(type) {
	case string:
		return maphash.String(seed, v)
	case bool:
		if v {
			return 1
		}
		return 2
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return maphash.String(seed, string(v))
		}
		if f == 0 {
			f = 0 // -0 equals 0
		}
		return math.Float64bits(f) * 0x9e3779b97f4a7c15
	case map[string]any:
		var h uint64 = 3
		for k, x := range v {
			h += maphash.String(seed, k) ^ (hashValue(seed, x) * 0xff51afd7ed558ccd)
		}
		return h
	case []any:
		var h uint64 = 5
		for _, x := range v {
			h = h*31 + hashValue(seed, x)
		}
		return h
	}
	return 0
}

func containsEqual(c []Node, n Node) bool {
	for _, m := range c {
		if equal(m.Value, n.Value) {
			return true
		}
	}
	return false
}

func (q *equality) eval(ev *evaluator, input []Node) ([]Node, error) {
	left, err := q.left.eval(ev, input)
	if err != nil {
		return nil, err
	}
	right, err := q.right.eval(ev, input)
	if err != nil {
		return nil, err
	}
	if len(left) == 0 || len(right) == 0 {
		return nil, nil
	}
	same := len(left) == len(right)
	for i := 0; same && i < len(left); i++ {
		same = equal(left[i].Value, right[i].Value)
	}
	return boolean(same != q.negate), nil
}

// equal compares two JSON values: numbers by value, objects and arrays element by element.
// Values of different kinds are never equal (a dateTime is not false).
func equal(a, b any) bool {
	switch a := a.(type) {
	case string:
		b, ok := b.(string)
		return ok && a == b
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		if a == b {
			return true
		}
		x, err1 := strconv.ParseFloat(string(a), 64)
		y, err2 := strconv.ParseFloat(string(b), 64)
		return err1 == nil && err2 == nil && x == y
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case nil:
		return b == nil
	}
	return false
}

func (l *logic) eval(ev *evaluator, input []Node) ([]Node, error) {
	left, err := l.left.eval(ev, input)
	if err != nil {
		return nil, err
	}
	a, aKnown, err := singletonBoolean(left)
	if err != nil {
		return nil, err
	}
	// Short-circuit where three-valued logic allows it.
	if aKnown && a != l.and {
		return boolean(a), nil
	}
	right, err := l.right.eval(ev, input)
	if err != nil {
		return nil, err
	}
	b, bKnown, err := singletonBoolean(right)
	if err != nil {
		return nil, err
	}
	switch {
	case bKnown && b != l.and:
		return boolean(b), nil
	case aKnown && bKnown:
		return boolean(l.and), nil // both true for and, both false for or
	}
	return nil, nil
}

// singletonBoolean converts a collection where FHIRPath expects a boolean: empty is
// unknown, a single boolean is itself, any other single item is true, and more than one
// item is an error.
func singletonBoolean(c []Node) (value, known bool, err error) {
	switch len(c) {
	case 0:
		return false, false, nil
	case 1:
		if b, ok := c[0].Value.(bool); ok {
			return b, true, nil
		}
		return true, true, nil
	}
	return false, false, fmt.Errorf("expected a single boolean, found %d items", len(c))
}

// boolean returns a one-item collection holding b. The collections are shared: nothing in
// this package writes into a collection it did not make itself.
func boolean(b bool) []Node {
	if b {
		return schema().trueColl
	}
	return schema().falseColl
}

func (o *typeOp) eval(ev *evaluator, input []Node) ([]Node, error) {
	items, err := o.operand.eval(ev, input)
	if err != nil {
		return nil, err
	}
	if o.op == "is" {
		return isType(items, o.typeName)
	}
	return ofType(items, o.typeName), nil
}

// isType implements `is`: a question about a single item.
func isType(items []Node, typeName string) ([]Node, error) {
	switch len(items) {
	case 0:
		return nil, nil
	case 1:
		return boolean(items[0].info.is(typeName)), nil
	}
	return nil, fmt.Errorf("'is %s' applied to %d items", typeName, len(items))
}

// ofType keeps the items of the type. It also implements `as`, which FHIRPath defines for
// a single item only; the specification's own search expressions apply it to collections
// (useContext.value as Quantity), which is read as a filter, as FHIR servers commonly do.
func ofType(items []Node, typeName string) []Node {
	var out []Node
	for _, n := range items {
		if n.info.is(typeName) {
			out = append(out, n)
		}
	}
	return out
}

func (c *call) eval(ev *evaluator, input []Node) ([]Node, error) {
	items, err := evalTarget(ev, c.target, input)
	if err != nil {
		return nil, err
	}
	switch c.fn {
	case fnWhere:
		var out []Node
		for i := range items {
			keep, err := c.test(ev, items[i:i+1:i+1])
			if err != nil {
				return nil, err
			}
			if keep {
				out = append(out, items[i])
			}
		}
		return out, nil
	case fnExists:
		if len(c.args) == 0 {
			return boolean(len(items) > 0), nil
		}
		for i := range items {
			keep, err := c.test(ev, items[i:i+1:i+1])
			if err != nil {
				return nil, err
			}
			if keep {
				return boolean(true), nil
			}
		}
		return boolean(false), nil
	case fnEmpty:
		return boolean(len(items) == 0), nil
	case fnNot:
		b, known, err := singletonBoolean(items)
		if err != nil || !known {
			return nil, err
		}
		return boolean(!b), nil
	case fnFirst:
		if len(items) == 0 {
			return nil, nil
		}
		return items[:1:1], nil
	case fnLast:
		if len(items) == 0 {
			return nil, nil
		}
		return items[len(items)-1:], nil
	case fnCount:
		return []Node{newNode(json.Number(strconv.Itoa(len(items))), schema().integer)}, nil
	case fnAs, fnOfType:
		return ofType(items, c.typeName), nil
	case fnIs:
		return isType(items, c.typeName)
	case fnResolve:
		var out []Node
		for _, item := range items {
			if n, ok := ev.resolve(item); ok {
				out = append(out, n)
			}
		}
		return out, nil
	case fnExtension:
		url := c.args[0].(*literal).node.Value.(string)
		var out []Node
		for _, item := range items {
			exts := appendChildren(nil, item, "extension")
			for _, ext := range exts {
				if m, ok := ext.Value.(map[string]any); ok && m["url"] == url {
					out = append(out, ext)
				}
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("function %s() is not implemented", c.name)
}

// test evaluates the criteria of where() or exists() for one item.
func (c *call) test(ev *evaluator, item []Node) (bool, error) {
	result, err := c.args[0].eval(ev, item)
	if err != nil {
		return false, err
	}
	b, known, err := singletonBoolean(result)
	if err != nil {
		return false, fmt.Errorf("%s() criteria: %w", c.name, err)
	}
	return known && b, nil
}

// resolve finds what a Reference points to without fetching anything: a contained
// resource for "#id", and otherwise a stand-in node carrying only the target's type (from
// the reference, or from Reference.type), which is all `resolve() is Patient` needs.
// A stand-in has no content to navigate: its Value is the reference string (nil when only
// Reference.type is known).
func (ev *evaluator) resolve(ref Node) (Node, bool) {
	obj, ok := ref.Value.(map[string]any)
	if !ok || ref.info == nil || !ref.info.is("Reference") {
		return Node{}, false
	}
	s := schema()
	r, _ := obj["reference"].(string)
	if len(r) > 1 && r[0] == '#' {
		if root, ok := ev.root.Value.(map[string]any); ok {
			for _, c := range appendResources(nil, root["contained"]) {
				if m := c.Value.(map[string]any); m["id"] == r[1:] {
					return c, true
				}
			}
		}
		// Not contained after all: Reference.type may still say what it is.
	}
	if typ, _ := SplitReference(r); typ != "" {
		return newNode(r, s.resources[typ]), true
	}
	if typ, _ := obj["type"].(string); typ != "" {
		// Reference.type is "Patient" or, absolute, ".../StructureDefinition/Patient".
		if t, ok := s.resources[typ[strings.LastIndexByte(typ, '/')+1:]]; ok {
			var value any
			if r != "" {
				value = r
			}
			return newNode(value, t), true
		}
	}
	return Node{}, false
}
