package searchparam

import (
	"slices"
	"sort"
	"strings"
)

// Derived says how a parameter is answered from the index rows of others, because its
// expression selects nothing they do not: such a parameter is not indexed on its own. R4 has
// two patterns of this, and they are about a fifth of an Observation's index rows:
//
//   - a reference narrowed to one target type: patient is
//     "Observation.subject.where(resolve() is Patient)", the subject rows pointing at a Patient;
//   - a union of other parameters: combo-code is "Observation.code |
//     Observation.component.code", the rows of code and of component-code.
type Derived struct {
	// From are the codes whose rows the parameter reads, sorted.
	From []string
	// TargetType, for a narrowed reference, is the one type its rows point at.
	TargetType string
}

// Derived reports whether code of resourceType is answered from other parameters' rows, and
// from which.
func (r *Registry) Derived(resourceType, code string) (Derived, bool) {
	tp, ok := r.byType[resourceType]
	if !ok {
		return Derived{}, false
	}
	d, ok := tp.derived[code]
	return d, ok
}

// branches are the alternatives of an expression that apply to resourceType: the parts of a
// top-level union that start at the type (parenthesised or not), in order, without repeats.
func branches(expression, resourceType string) []string {
	var out []string
	for _, b := range strings.Split(expression, " | ") {
		b = strings.TrimSpace(b)
		if strings.HasPrefix(strings.TrimLeft(b, "("), resourceType+".") && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out
}

// findDerived works out which of one type's parameters are derived from others. Only
// parameters of the specification take part, and a source is never itself derived, so that
// a derived parameter's rows are always stored ones. A union must be exactly covered by its
// sources' branches, and an expression with a "|" inside parentheses or a function is left
// alone (its branches would not be the whole expression).
func findDerived(resourceType string, defs []*Definition, custom map[string]bool) map[string]Derived {
	type param struct {
		def      *Definition
		branches []string
	}
	var params []param
	for _, d := range defs {
		if custom[d.Code] || strings.Count(d.Expression, "|") != strings.Count(d.Expression, " | ") {
			continue
		}
		bs := branches(d.Expression, resourceType)
		if len(bs) == 0 || strings.Contains(strings.Join(bs, ""), "|") {
			continue
		}
		params = append(params, param{d, bs})
	}
	derived := map[string]Derived{}
	// Narrowed references first: X.where(resolve() is T) over a parameter whose one branch is X.
	for _, p := range params {
		if p.def.Type != Reference || len(p.branches) != 1 {
			continue
		}
		base, target, ok := strings.Cut(p.branches[0], ".where(resolve() is ")
		if !ok || !strings.HasSuffix(target, ")") || strings.ContainsAny(target[:len(target)-1], " ().") {
			continue
		}
		for _, q := range params {
			if q.def.Type == Reference && len(q.branches) == 1 && q.branches[0] == base {
				derived[p.def.Code] = Derived{From: []string{q.def.Code}, TargetType: target[:len(target)-1]}
				break
			}
		}
	}
	// Unions: every branch is a branch of a source, and every source's branches are among them.
	for _, p := range params {
		if len(p.branches) < 2 {
			continue
		}
		if _, done := derived[p.def.Code]; done {
			continue
		}
		covered := map[string]bool{}
		var from []string
		for _, q := range params {
			if q.def == p.def || q.def.Type != p.def.Type || len(q.branches) >= len(p.branches) {
				continue
			}
			if _, isDerived := derived[q.def.Code]; isDerived {
				continue
			}
			if !allIn(q.branches, p.branches) {
				continue
			}
			from = append(from, q.def.Code)
			for _, b := range q.branches {
				covered[b] = true
			}
		}
		if len(covered) == len(p.branches) && len(from) >= 2 {
			sort.Strings(from)
			derived[p.def.Code] = Derived{From: from}
		}
	}
	// A source must be stored: drop unions that picked a parameter derived in this pass.
	for code, d := range derived {
		for _, f := range d.From {
			if _, isDerived := derived[f]; isDerived {
				delete(derived, code)
				break
			}
		}
	}
	return derived
}

func allIn(some, all []string) bool {
	for _, s := range some {
		if !slices.Contains(all, s) {
			return false
		}
	}
	return true
}
