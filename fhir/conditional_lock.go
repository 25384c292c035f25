package fhir

import (
	"hash/fnv"
	"slices"
	"strings"

	"github.com/cartreg/cartreg/fhir/searchparam"
)

// A conditional operation locks what its criteria could match, so that two writers whose
// criteria might select the same resource take turns rather than both find nothing and both
// create. The locks are transaction-scoped advisory locks on the criteria as normalised by
// conditionalLocks, not on the query as written: "identifier=s|X", "identifier=X&_count=1"
// and "_sort=name&identifier=s%7CX" are one lock.
//
// The locks form a two-level hierarchy per resource type and search parameter:
//
//   - a parameter whose values match by equality (a token's code, a reference's id, a uri, a
//     string:exact, _id) takes, for each value, an exclusive lock on (type, parameter, value)
//     and a shared lock on (type, parameter). A token locks on its code alone, whatever its
//     system: "X" could match the resource that "s|X" finds, so the two must collide; that
//     "s1|X" and "s2|X" collide too costs a wait, never a wrong answer.
//   - any other parameter (string prefixes, dates, numbers, :not, :missing, "system|" tokens,
//     chains, _has) could match resources of any value, so it takes an exclusive lock on
//     (type, parameter), which collides with every criteria on that parameter.
//
// Criteria that share a parameter therefore serialise whenever they could match the same
// value. Criteria on disjoint parameters ("identifier=X" and "name=Y") do not: only a lock on
// the whole type would order them, and it would order every conditional create of that type.
type conditionalLock struct {
	key    int64
	shared bool
}

// conditionalLocks are the locks for criteria q on resourceType, one per key, sorted by key:
// every transaction takes its locks in that order, so two cannot each hold what the other
// waits for.
func (s *Searcher) conditionalLocks(resourceType string, q *searchQuery) []conditionalLock {
	mode := map[int64]bool{} // key → shared
	exclusive := func(parts ...string) { mode[lockKey(resourceType, parts...)] = false }
	shared := func(parts ...string) {
		k := lockKey(resourceType, parts...)
		if _, held := mode[k]; !held {
			mode[k] = true
		}
	}
	if len(q.filters) == 0 {
		exclusive() // criteria that select everything of the type
	}
	for _, f := range q.filters {
		code, values, exact := s.exactValues(resourceType, f)
		if !exact {
			exclusive(code)
			continue
		}
		shared(code)
		for _, v := range values {
			exclusive(code, v)
		}
	}
	keys, sh := sortedLocks(mode)
	locks := make([]conditionalLock, len(keys))
	for i, k := range keys {
		locks[i] = conditionalLock{key: k, shared: sh[i]}
	}
	return locks
}

// sortedLocks is the keys of mode in order, and whether each is to be shared.
func sortedLocks(mode map[int64]bool) ([]int64, []bool) {
	keys := make([]int64, 0, len(mode))
	for k := range mode {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	shared := make([]bool, len(keys))
	for i, k := range keys {
		shared[i] = mode[k]
	}
	return keys, shared
}

// exactValues is the parameter code a filter locks on and, when every value it takes matches
// by equality, those values in canonical form (exact true).
func (s *Searcher) exactValues(resourceType string, f filter) (code string, values []string, exact bool) {
	if strings.HasPrefix(f.key, "_has:") {
		return "_has", nil, false
	}
	head, _, chained := strings.Cut(f.key, ".")
	code, modifier, _ := strings.Cut(head, ":")
	if chained {
		return code, nil, false
	}
	var canonical func(string) (string, bool)
	switch code {
	case "_id":
		canonical = func(v string) (string, bool) { return unescape(v), modifier == "" }
	case "_lastUpdated":
		return code, nil, false
	default:
		kind, _, ok := s.lookupAll([]string{resourceType}, code)
		if !ok {
			return code, nil, false
		}
		canonical = exactCanonical(kind, modifier)
		if canonical == nil {
			return code, nil, false
		}
	}
	for _, rep := range f.values {
		for _, v := range rep {
			c, ok := canonical(v)
			if !ok {
				return code, nil, false
			}
			values = append(values, c)
		}
	}
	return code, values, true
}

// exactCanonical is the canonical form of the values of a parameter of kind with modifier
// that match by equality, or nil when its values do not.
func exactCanonical(kind searchparam.Type, modifier string) func(string) (string, bool) {
	switch kind {
	case searchparam.Token:
		if modifier != "" {
			return nil
		}
		return func(v string) (string, bool) {
			parts := splitEscaped(v, '|')
			switch len(parts) {
			case 1:
				return unescape(parts[0]), true
			case 2:
				code := unescape(parts[1])
				return code, code != "" // "system|" is every code of the system
			}
			return "", false
		}
	case searchparam.Reference:
		if modifier != "" && !IsResourceType(modifier) {
			return nil
		}
		return func(v string) (string, bool) {
			// The id, however the reference is written: "Patient/1", "1", an absolute URL to
			// this server or another, a canonical with |version, a version-specific reference.
			v = unescape(v)
			v, _, _ = strings.Cut(v, "|")
			if i := strings.Index(v, "/_history/"); i >= 0 {
				v = v[:i]
			}
			if i := strings.LastIndexByte(v, '/'); i >= 0 {
				v = v[i+1:]
			}
			return v, true
		}
	case searchparam.URI:
		if modifier != "" {
			return nil
		}
		return func(v string) (string, bool) { return unescape(v), true }
	case searchparam.String:
		if modifier != "exact" {
			return nil
		}
		return func(v string) (string, bool) { return unescape(v), true }
	}
	return nil
}

// lockKey is the advisory lock key of (resource type, parts…): a 64-bit hash, in a key space
// of its own by its prefix.
func lockKey(resourceType string, parts ...string) int64 {
	h := fnv.New64a()
	h.Write([]byte("cartreg.conditional\x00" + resourceType))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return int64(h.Sum64())
}

// tryLocksSQL takes the locks $1 (keys) in order, shared where $2 says, without waiting, and
// stops at the first it cannot have; it returns how many it took. Stopping there keeps the
// order: a lock is only ever waited for while holding locks that sort before it.
const tryLocksSQL = `WITH RECURSIVE l(i, ok) AS (
		SELECT 0, true
		UNION ALL
		SELECT l.i + 1, CASE WHEN ($2::bool[])[l.i + 1]
			THEN pg_try_advisory_xact_lock_shared(($1::bigint[])[l.i + 1])
			ELSE pg_try_advisory_xact_lock(($1::bigint[])[l.i + 1]) END
		FROM l WHERE l.ok AND l.i < cardinality($1::bigint[])
	)
	SELECT count(*) - 1 FROM l WHERE ok`
