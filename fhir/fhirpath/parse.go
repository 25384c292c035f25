package fhirpath

import (
	"encoding/json"
	"fmt"
	"strings"
)

// CompileError is a syntax error, or syntax outside the supported subset, with the byte
// offset in the expression where it was found.
type CompileError struct {
	Pos int
	Msg string
}

func (e *CompileError) Error() string { return fmt.Sprintf("fhirpath: at %d: %s", e.Pos, e.Msg) }

// Expression is a compiled FHIRPath expression. It is immutable and safe for concurrent use.
type Expression struct {
	src  string
	root expr
}

// Compile parses a FHIRPath expression. Anything outside the supported subset (see the
// package documentation) is a *CompileError.
func Compile(src string) (*Expression, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	s := schema() // type names in `is`/`as` are checked against it
	p := &parser{toks: toks, schema: s}
	root, err := p.expression(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, p.unexpected(t)
	}
	return &Expression{src: src, root: root}, nil
}

// MustCompile is Compile for expressions known to be valid; it panics on an error.
func MustCompile(src string) *Expression {
	e, err := Compile(src)
	if err != nil {
		panic(err)
	}
	return e
}

// String returns the expression as it was written.
func (e *Expression) String() string { return e.src }

type parser struct {
	toks   []token
	i      int
	schema *schemaData
	depth  int // of nested parentheses, arguments and indexes
}

// maxDepth bounds nesting, so that no input can exhaust the stack of the recursive
// descent (or, later, of evaluation).
const maxDepth = 100

func (p *parser) nest(pos int) error {
	p.depth++
	if p.depth > maxDepth {
		return &CompileError{Pos: pos, Msg: fmt.Sprintf("expression nested more than %d deep", maxDepth)}
	}
	return nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *parser) isOp(text string) bool {
	t := p.peek()
	return t.kind == tokOperator && t.text == text
}

func (p *parser) expectOp(text string) error {
	if t := p.next(); t.kind != tokOperator || t.text != text {
		return &CompileError{Pos: t.pos, Msg: fmt.Sprintf("expected %q, found %s", text, describe(t))}
	}
	return nil
}

func (p *parser) unexpected(t token) error {
	return &CompileError{Pos: t.pos, Msg: "unexpected " + describe(t)}
}

func describe(t token) string {
	switch t.kind {
	case tokEOF:
		return "end of expression"
	case tokString:
		return fmt.Sprintf("string '%s'", t.text)
	default:
		return fmt.Sprintf("%q", t.text)
	}
}

// Binary operators by precedence, loosest first, as FHIRPath ranks them. Levels whose
// operators are all unsupported are still listed so that using one is reported as such
// rather than as a syntax error.
var binaryLevels = []map[string]bool{
	{"implies": false},
	{"or": true, "xor": false},
	{"and": true},
	{"in": false, "contains": false},
	{"=": true, "!=": true, "~": false, "!~": false},
	{"<": false, ">": false, "<=": false, ">=": false},
	{"|": true},
	{"is": true, "as": true},
	{"+": false, "-": false, "&": false},
	{"*": false, "/": false, "div": false, "mod": false},
}

// binaryOperator returns the operator at the current token if it belongs to the level,
// and whether it is supported. Word operators ("and", "is") are plain identifiers to the
// lexer; after an operand, where a name cannot follow, they can only be operators.
func (p *parser) binaryOperator(level int) (op string, supported, ok bool) {
	t := p.peek()
	if t.kind != tokOperator && t.kind != tokIdentifier {
		return "", false, false
	}
	supported, ok = binaryLevels[level][t.text]
	return t.text, supported, ok
}

func (p *parser) expression(level int) (expr, error) {
	if level == len(binaryLevels) {
		return p.unary()
	}
	if level == 0 {
		if err := p.nest(p.peek().pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
	}
	left, err := p.expression(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		op, supported, ok := p.binaryOperator(level)
		if !ok {
			return left, nil
		}
		t := p.next()
		if !supported {
			return nil, &CompileError{Pos: t.pos, Msg: fmt.Sprintf("operator %q is not supported", op)}
		}
		if op == "is" || op == "as" {
			name, err := p.typeSpecifier()
			if err != nil {
				return nil, err
			}
			left = &typeOp{op: op, operand: left, typeName: name}
			continue
		}
		right, err := p.expression(level + 1)
		if err != nil {
			return nil, err
		}
		switch op {
		case "|":
			left = &union{left: left, right: right}
		case "=", "!=":
			left = &equality{negate: op == "!=", left: left, right: right}
		case "and", "or":
			left = &logic{and: op == "and", left: left, right: right}
		}
	}
}

// typeSpecifier reads a type name, optionally qualified with FHIR., and checks that it
// names an R4 type.
func (p *parser) typeSpecifier() (string, error) {
	t := p.next()
	if t.kind != tokIdentifier {
		return "", &CompileError{Pos: t.pos, Msg: "expected a type name, found " + describe(t)}
	}
	name := t.text
	if p.isOp(".") && (name == "FHIR" || name == "System") {
		p.next()
		n := p.next()
		if n.kind != tokIdentifier {
			return "", &CompileError{Pos: n.pos, Msg: "expected a type name, found " + describe(n)}
		}
		if name == "System" {
			return "", &CompileError{Pos: t.pos, Msg: fmt.Sprintf("System types (System.%s) are not supported; use the FHIR type", n.text)}
		}
		name = n.text
	}
	if _, ok := p.schema.types[name]; !ok {
		return "", &CompileError{Pos: t.pos, Msg: fmt.Sprintf("unknown type %q (FHIR R4 type names are case-sensitive)", name)}
	}
	return name, nil
}

func (p *parser) unary() (expr, error) {
	if p.isOp("+") || p.isOp("-") {
		t := p.peek()
		return nil, &CompileError{Pos: t.pos, Msg: "arithmetic is not supported"}
	}
	e, err := p.term()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isOp("."):
			p.next()
			t := p.next()
			if t.kind != tokIdentifier {
				return nil, &CompileError{Pos: t.pos, Msg: "expected a name after '.', found " + describe(t)}
			}
			if p.isOp("(") {
				e, err = p.function(e, t)
				if err != nil {
					return nil, err
				}
				continue
			}
			e = &child{target: e, name: t.text}
		case p.isOp("["):
			p.next()
			index, err := p.expression(0)
			if err != nil {
				return nil, err
			}
			if err := p.expectOp("]"); err != nil {
				return nil, err
			}
			e = &indexer{target: e, index: index}
		default:
			return e, nil
		}
	}
}

func (p *parser) term() (expr, error) {
	t := p.next()
	switch t.kind {
	case tokIdentifier:
		switch t.text {
		case "true", "false":
			return &literal{node: Node{Value: t.text == "true", Type: "boolean", info: p.schema.types["boolean"]}}, nil
		}
		if p.isOp("(") {
			return p.function(nil, t)
		}
		if isUpper(t.text[0]) {
			// A capitalized name at the start of a path is a type (elements are never
			// capitalized): "Patient.name" applies to Patients only.
			if _, ok := p.schema.types[t.text]; !ok {
				return nil, &CompileError{Pos: t.pos, Msg: fmt.Sprintf("unknown type %q", t.text)}
			}
			return &typeFilter{typeName: t.text}, nil
		}
		return &child{name: t.text}, nil
	case tokString:
		return &literal{node: Node{Value: t.text, Type: "string", info: p.schema.types["string"]}}, nil
	case tokNumber:
		typ := "integer"
		if strings.Contains(t.text, ".") {
			typ = "decimal"
		}
		return &literal{node: Node{Value: json.Number(t.text), Type: typ, info: p.schema.types[typ]}}, nil
	case tokVariable:
		switch t.text {
		case "resource", "rootResource", "context":
			// Evaluation always starts at the resource, so all three are the resource.
			return &resourceVar{}, nil
		}
		return nil, &CompileError{Pos: t.pos, Msg: fmt.Sprintf("variable %%%s is not supported", t.text)}
	case tokSpecial:
		if t.text == "$this" {
			return &this{}, nil
		}
		return nil, &CompileError{Pos: t.pos, Msg: fmt.Sprintf("%s is not supported", t.text)}
	case tokDateTime:
		return nil, &CompileError{Pos: t.pos, Msg: "date and time literals are not supported"}
	case tokOperator:
		switch t.text {
		case "(":
			e, err := p.expression(0)
			if err != nil {
				return nil, err
			}
			if err := p.expectOp(")"); err != nil {
				return nil, err
			}
			return e, nil
		case "{":
			if err := p.expectOp("}"); err != nil {
				return nil, err
			}
			return &literal{empty: true}, nil
		}
	}
	return nil, p.unexpected(t)
}

// function parses a call of name on target (nil: the input of the expression); the
// current token is "(".
func (p *parser) function(target expr, name token) (expr, error) {
	p.next() // (
	var args []expr
	var typeArg string
	argc := 0
	switch name.text {
	case "as", "is", "ofType":
		n, err := p.typeSpecifier()
		if err != nil {
			return nil, err
		}
		typeArg, argc = n, 1
	default:
		for !p.isOp(")") {
			if argc > 0 {
				if err := p.expectOp(","); err != nil {
					return nil, err
				}
			}
			a, err := p.expression(0)
			if err != nil {
				return nil, err
			}
			args = append(args, a)
			argc++
		}
	}
	if err := p.expectOp(")"); err != nil {
		return nil, err
	}
	spec, ok := functions[name.text]
	if !ok {
		return nil, &CompileError{Pos: name.pos, Msg: fmt.Sprintf("function %s() is not supported", name.text)}
	}
	if argc < spec.minArgs || argc > spec.maxArgs {
		return nil, &CompileError{Pos: name.pos, Msg: fmt.Sprintf("%s() takes %s, not %d", name.text, spec.arity(), argc)}
	}
	if name.text == "extension" {
		lit, ok := args[0].(*literal)
		if !ok || lit.node.Type != "string" {
			return nil, &CompileError{Pos: name.pos, Msg: "extension() takes a string literal URL"}
		}
	}
	return &call{target: target, fn: spec.fn, name: name.text, args: args, typeName: typeArg}, nil
}

type function int

const (
	fnWhere function = iota
	fnExists
	fnEmpty
	fnNot
	fnFirst
	fnLast
	fnCount
	fnAs
	fnIs
	fnOfType
	fnResolve
	fnExtension
)

type functionSpec struct {
	fn               function
	minArgs, maxArgs int
}

func (s functionSpec) arity() string {
	switch {
	case s.maxArgs == 0:
		return "no argument"
	case s.minArgs == s.maxArgs:
		return "one argument"
	default:
		return "at most one argument"
	}
}

// functions are the supported FHIRPath functions.
var functions = map[string]functionSpec{
	"where":     {fnWhere, 1, 1},
	"exists":    {fnExists, 0, 1},
	"empty":     {fnEmpty, 0, 0},
	"not":       {fnNot, 0, 0},
	"first":     {fnFirst, 0, 0},
	"last":      {fnLast, 0, 0},
	"count":     {fnCount, 0, 0},
	"as":        {fnAs, 1, 1},
	"is":        {fnIs, 1, 1},
	"ofType":    {fnOfType, 1, 1},
	"resolve":   {fnResolve, 0, 0},
	"extension": {fnExtension, 1, 1},
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
