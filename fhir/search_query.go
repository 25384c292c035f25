package fhir

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Result parameters shape the answer rather than select resources.
var resultParameters = map[string]bool{
	"_count": true, "_sort": true, "_total": true, "_summary": true, "_elements": true,
	"_include": true, "_revinclude": true, "_format": true, "_pretty": true, "_cursor": true, "_type": true,
}

// Parameters that select resources but that this server does not support, with why. They are
// reported like unknown ones.
var unsupportedParameters = map[string]string{
	"_text":    "full-text search of the narrative is not supported",
	"_content": "full-text search of the resource is not supported",
	"_query":   "named queries are not supported",
	"_list":    "searching by List membership is not supported",
	"_filter":  "the _filter syntax is not supported",
}

// filter is one selecting parameter of a query: its key as written (with any modifier and
// chain) and the values of each repetition. Repetitions are ANDed; the comma-separated
// values inside one repetition are ORed.
type filter struct {
	key    string
	values [][]string
}

// searchQuery is a parsed search.
type searchQuery struct {
	filters    []filter
	count      int
	sort       []sortKey
	total      string // none, estimate or accurate
	summary    string // "", true, text, data, count, false
	elements   []string
	includes   []include
	revincl    []include
	cursor     string
	base       string  // this server's FHIR base as the client sees it
	unknown    []Issue // parameters ignored, to report
	strictness bool
	// compartment, when set, limits the search to one compartment's members.
	compartment *compartmentScope
}

type sortKey struct {
	code string
	desc bool
}

// include is an _include or _revinclude: SourceType:param[:TargetType], and whether it
// iterates over what it included.
type include struct {
	source, param, target string
	iterate               bool
}

// parseSearch reads a query's parameters. Unknown parameters become issues to report, or a
// 400 when strict; a value the server cannot read is always a 400.
func (s *Searcher) parseSearch(resourceTypes []string, params url.Values, strict bool, defaultCount, maxCount int) (*searchQuery, error) {
	q := &searchQuery{count: defaultCount, total: "none", strictness: strict}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable SQL text for a given query
	for _, key := range keys {
		raw := params[key]
		base := strings.SplitN(strings.SplitN(key, ":", 2)[0], ".", 2)[0]
		switch {
		case resultParameters[base]:
			if err := q.readResultParameter(base, key, raw, maxCount); err != nil {
				return nil, err
			}
		case unsupportedParameters[base] != "":
			q.unknown = append(q.unknown, Issue{Severity: Warning, Code: NotSupported, Diagnostics: key + ": " + unsupportedParameters[base]})
		default:
			if err := s.checkFilterKey(resourceTypes, key); err != nil {
				var unknown *unknownParameterError
				if errors.As(err, &unknown) {
					q.unknown = append(q.unknown, Issue{Severity: Warning, Code: NotSupported, Diagnostics: unknown.outcome.Issues[0].Diagnostics + "; the parameter was ignored"})
					continue
				}
				return nil, err
			}
			f := filter{key: key}
			for _, v := range raw {
				f.values = append(f.values, splitEscaped(v, ','))
			}
			q.filters = append(q.filters, f)
		}
	}
	if strict && len(q.unknown) > 0 {
		return nil, &Outcome{Status: http.StatusBadRequest, Issues: markErrors(q.unknown)}
	}
	if err := s.checkLimits(q); err != nil {
		return nil, err
	}
	return q, nil
}

func markErrors(issues []Issue) []Issue {
	out := make([]Issue, len(issues))
	for i, is := range issues {
		is.Severity = Error
		out[i] = is
	}
	return out
}

func (q *searchQuery) readResultParameter(base, key string, raw []string, maxCount int) error {
	last := raw[len(raw)-1]
	bad := func(msg string) error { return NewOutcome(http.StatusBadRequest, Value, key+": "+msg) }
	switch base {
	case "_count":
		n, err := parseCount(last, q.count, maxCount)
		if err != nil {
			return err
		}
		q.count = n
	case "_sort":
		for _, part := range splitEscaped(last, ',') {
			if part == "" {
				continue
			}
			k := sortKey{code: part}
			if strings.HasPrefix(part, "-") {
				k = sortKey{code: part[1:], desc: true}
			}
			q.sort = append(q.sort, k)
		}
	case "_total":
		if last != "none" && last != "estimate" && last != "accurate" {
			return bad("want none, estimate or accurate")
		}
		q.total = last
	case "_summary":
		switch last {
		case "true", "text", "data", "count", "false":
			q.summary = last
		default:
			return bad("want true, text, data, count or false")
		}
	case "_elements":
		for _, e := range splitEscaped(last, ',') {
			if e = strings.TrimSpace(e); e != "" {
				q.elements = append(q.elements, e)
			}
		}
	case "_include", "_revinclude":
		iterate := strings.HasSuffix(key, ":iterate") || strings.HasSuffix(key, ":recurse")
		for _, v := range raw {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || len(parts) > 3 || !IsResourceType(parts[0]) {
				return bad(fmt.Sprintf("%q is not SourceType:parameter[:TargetType]", v))
			}
			inc := include{source: parts[0], param: parts[1], iterate: iterate}
			if len(parts) == 3 {
				if !IsResourceType(parts[2]) {
					return bad(fmt.Sprintf("%q is not a resource type", parts[2]))
				}
				inc.target = parts[2]
			}
			if base == "_include" {
				q.includes = append(q.includes, inc)
			} else {
				q.revincl = append(q.revincl, inc)
			}
		}
	case "_cursor":
		if last == "" {
			return NewOutcome(http.StatusBadRequest, Value, "_cursor is empty", "_cursor")
		}
		q.cursor = last
	}
	return nil
}

// parseCount reads _count: def when absent, at most maxCount.
func parseCount(raw string, def, maxCount int) (int, error) {
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 {
		return 0, NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("_count=%q is not a number of entries", raw))
	}
	return min(n, maxCount), nil
}

// parseTypes reads _type: resource types separated by commas; nil when absent.
func parseTypes(raw string) ([]string, error) {
	if raw == "" {
		return nil, nil
	}
	var types []string
	for _, name := range splitEscaped(raw, ',') {
		if !IsResourceType(name) {
			return nil, NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("_type: %q is not an R4 resource type", name))
		}
		types = append(types, name)
	}
	return types, nil
}

// splitEscaped splits on sep, honouring the search syntax's backslash escapes (\, \| \$ \\),
// and removes the escapes.
func splitEscaped(s string, sep byte) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			if s[i+1] == sep {
				cur.WriteByte(sep)
			} else {
				cur.WriteByte(s[i])
				cur.WriteByte(s[i+1])
			}
			i++
		case s[i] == sep:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(parts, cur.String())
}

// unescape removes the remaining search escapes from a value.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\,`, `,`, `\|`, `|`, `\$`, `$`, `\\`, `\`)
	return r.Replace(s)
}
