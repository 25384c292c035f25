package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// SearchLimits bound what one search may cost the database. Every search, whether sent on
// its own, as a Bundle's GET entry or as a conditional operation's criteria, is checked
// against them before any SQL runs; a query over a limit is a 400 naming it, so a client
// learns what to change instead of waiting for a statement that never ends. A zero field
// takes its default (DefaultSearchLimits).
type SearchLimits struct {
	// Timeout is the longest any one statement of a search may run (PostgreSQL's
	// statement_timeout in the search's own transaction); past it the search is a 422.
	Timeout time.Duration
	// MaxChainDepth is the most links a chain may follow: subject.organization.name is 2.
	MaxChainDepth int
	// MaxHasDepth is the most _has a parameter may nest.
	MaxHasDepth int
	// MaxParameters is the most selecting parameters a search may have, each repetition of a
	// repeated parameter counted.
	MaxParameters int
	// MaxValues is the most values a search may have, the comma-separated alternatives of
	// every parameter counted: each becomes conditions and statement arguments.
	MaxValues int
	// MaxSortKeys is the most keys _sort may list.
	MaxSortKeys int
	// MaxIncludes is the most _include and _revinclude values a search may have, together.
	MaxIncludes int
	// MaxIncluded is the most resources _include and _revinclude may add to one page; a page
	// that would include more is a 422 (ask for a smaller _count).
	MaxIncluded int
}

// DefaultSearchLimits are the limits when none are configured: well above what the
// registry's own clients ask for (its deepest chain is 2, its longest _sort 2).
var DefaultSearchLimits = SearchLimits{
	Timeout:       10 * time.Second,
	MaxChainDepth: 3,
	MaxHasDepth:   2,
	MaxParameters: 50,
	MaxValues:     1000,
	MaxSortKeys:   5,
	MaxIncludes:   10,
	MaxIncluded:   1000,
}

// withDefaults fills the zero fields from DefaultSearchLimits.
func (l SearchLimits) withDefaults() SearchLimits {
	d := DefaultSearchLimits
	pick := func(v, def int) int {
		if v <= 0 {
			return def
		}
		return v
	}
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	l.MaxChainDepth = pick(l.MaxChainDepth, d.MaxChainDepth)
	l.MaxHasDepth = pick(l.MaxHasDepth, d.MaxHasDepth)
	l.MaxParameters = pick(l.MaxParameters, d.MaxParameters)
	l.MaxValues = pick(l.MaxValues, d.MaxValues)
	l.MaxSortKeys = pick(l.MaxSortKeys, d.MaxSortKeys)
	l.MaxIncludes = pick(l.MaxIncludes, d.MaxIncludes)
	l.MaxIncluded = pick(l.MaxIncluded, d.MaxIncluded)
	return l
}

// SetLimits replaces the searcher's limits (zero fields take their defaults). It is meant
// for wiring, before the searcher serves requests.
func (s *Searcher) SetLimits(l SearchLimits) { s.limits = l.withDefaults() }

// Limits returns the limits the searcher enforces.
func (s *Searcher) Limits() SearchLimits { return s.limits }

// tooCostly is the 400 for a query over one of the limits: it names the limit, its value
// and the setting that raises it, located at the parameter.
func tooCostly(location, what string, limit int, setting string) error {
	return NewOutcome(http.StatusBadRequest, TooCostly,
		fmt.Sprintf("%s: %s; this server allows at most %d (%s)", location, what, limit, setting), location)
}

// checkLimits refuses a parsed query over the searcher's limits.
func (s *Searcher) checkLimits(q *searchQuery) error {
	l := s.limits
	n, values := 0, 0
	for _, f := range q.filters {
		n += len(f.values)
		for _, v := range f.values {
			values += len(v)
		}
		if d := chainDepth(f.key); d > l.MaxChainDepth {
			return tooCostly(f.key, fmt.Sprintf("a chain of %d links", d), l.MaxChainDepth, "CARTREG_SEARCH_MAX_CHAIN_DEPTH")
		}
		if d := strings.Count(f.key, "_has:"); d > l.MaxHasDepth {
			return tooCostly(f.key, fmt.Sprintf("%d nested _has", d), l.MaxHasDepth, "CARTREG_SEARCH_MAX_HAS_DEPTH")
		}
	}
	if n > l.MaxParameters {
		return tooCostly("search parameters", fmt.Sprintf("the search has %d", n), l.MaxParameters, "CARTREG_SEARCH_MAX_PARAMETERS")
	}
	if values > l.MaxValues {
		return tooCostly("search parameters", fmt.Sprintf("the search has %d values", values), l.MaxValues, "CARTREG_SEARCH_MAX_VALUES")
	}
	if len(q.sort) > l.MaxSortKeys {
		return tooCostly("_sort", fmt.Sprintf("%d sort keys", len(q.sort)), l.MaxSortKeys, "CARTREG_SEARCH_MAX_SORT_KEYS")
	}
	if n := len(q.includes) + len(q.revincl); n > l.MaxIncludes {
		return tooCostly("_include", fmt.Sprintf("%d _include and _revinclude values", n), l.MaxIncludes, "CARTREG_SEARCH_MAX_INCLUDES")
	}
	return nil
}

// chainDepth counts the links a parameter follows: the dots of its chains and the _has
// steps that lead into them each reach one resource further.
func chainDepth(key string) int {
	depth := 0
	for _, part := range strings.Split(key, ":") {
		depth += strings.Count(part, ".")
	}
	return depth
}

// tooManyIncluded is the 422 for a page whose _include and _revinclude would add more
// resources than the limit.
func (s *Searcher) tooManyIncluded() error {
	return NewOutcome(http.StatusUnprocessableEntity, TooCostly,
		fmt.Sprintf("_include and _revinclude would add more than %d resources to the page (CARTREG_SEARCH_MAX_INCLUDED); ask for a smaller _count", s.limits.MaxIncluded),
		"_include")
}

// statementTimeoutKey carries, in a context, the statement time limit that Store.InTx sets
// on the transactions it begins.
type statementTimeoutKey struct{}

// WithStatementTimeout returns a context under which every transaction Store.InTx begins
// limits each of its statements to d (PostgreSQL's statement_timeout, set locally), and the
// setting to name when one runs out. A statement past it fails with SQLSTATE 57014, which
// StatementTimeoutOutcome turns into a 422.
func WithStatementTimeout(ctx context.Context, d time.Duration, setting string) context.Context {
	if d <= 0 {
		return ctx
	}
	return context.WithValue(ctx, statementTimeoutKey{}, statementTimeout{d, setting})
}

type statementTimeout struct {
	d       time.Duration
	setting string
}

// StatementTimeoutSetting is d as PostgreSQL's statement_timeout: whole milliseconds, at least
// one (a limit under a millisecond must not round to 0, which is none), or "0" for no limit.
func StatementTimeoutSetting(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	return fmt.Sprintf("%dms", max(d.Milliseconds(), 1))
}

// timeoutSetting is the context's statement limit as a statement_timeout setting, or "" for
// none.
func timeoutSetting(ctx context.Context) string {
	if st, ok := ctx.Value(statementTimeoutKey{}).(statementTimeout); ok {
		return StatementTimeoutSetting(st.d)
	}
	return ""
}

// QueryCanceled tells whether err is PostgreSQL cancelling a statement (SQLSTATE 57014,
// query_canceled): statement_timeout ran out.
func QueryCanceled(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// StatementTimeoutOutcome turns a statement that ran past the time limit under ctx (see
// WithStatementTimeout) into a 422 too-costly Outcome naming the limit; other errors are
// returned as they are.
func StatementTimeoutOutcome(ctx context.Context, err error) error {
	if !QueryCanceled(err) || ctx.Err() != nil { // a client that went away is no timeout
		return err
	}
	st, ok := ctx.Value(statementTimeoutKey{}).(statementTimeout)
	if !ok {
		return err
	}
	return timeoutOutcome(st.d, st.setting)
}

func timeoutOutcome(d time.Duration, setting string) error {
	return NewOutcome(http.StatusUnprocessableEntity, TooCostly,
		fmt.Sprintf("a database statement ran past the limit of %s (%s) and was cancelled; narrow the request", d, setting))
}
