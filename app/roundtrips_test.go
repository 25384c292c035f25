package app_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// roundTrips counts what a connection sends PostgreSQL while on: each statement on its own,
// each batch (pipelined statements) and each COPY is one round trip.
type roundTrips struct {
	mu   sync.Mutex
	on   bool
	sent []string
}

func (r *roundTrips) record(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		r.sent = append(r.sent, what)
	}
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.record(strings.Join(strings.Fields(d.SQL), " "))
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	r.record(fmt.Sprintf("a batch of %d", d.Batch.Len()))
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (r *roundTrips) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	r.record(fmt.Sprintf("COPY %v", d.TableName))
	return ctx
}
func (r *roundTrips) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// tracedHarness is cartreg on a pool whose connections report what they send to trace.
func tracedHarness(t *testing.T) (*apptest.Harness, *roundTrips) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	trace := &roundTrips{}
	cfg.ConnConfig.Tracer = trace
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return apptest.New(t, apptest.WithDatabase(pool)), trace
}

// during is what the connections sent while do ran.
func (r *roundTrips) during(do func()) []string {
	r.mu.Lock()
	r.on, r.sent = true, nil
	r.mu.Unlock()
	do()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.sent
}

// maxWriteRoundTrips is what a transaction Bundle of new resources may cost in round trips to
// PostgreSQL, whatever its size: each is a wait of both processes. A new Patient with no
// registry facts costs the registry's projection one (its row), not the three of reading and
// re-deriving the patient's facts; references to what the Bundle wrote are not looked up; the
// follow-up hook none, since neither a new Patient nor a new Observation that is no remission
// assessment can concern a Task; the audit record none of its own, since its INSERT goes
// with the Subscription hook's lookup (fhir.SendWithNext); and the BEGIN none either, since it
// goes in the batch of the transaction's first statements.
const maxWriteRoundTrips = 4

// A transaction Bundle costs the same round trips with one Observation as with twenty: its
// writes are batched per table and per step, never sent one resource at a time.
func TestATransactionsRoundTripsDoNotGrowWithItsSize(t *testing.T) {
	h, trace := tracedHarness(t)

	bundle := func(n, observations int) string {
		patient := fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", n)
		entries := []string{fmt.Sprintf(`{"fullUrl":%q,"resource":{"resourceType":"Patient",
			"identifier":[{"system":"http://example.org/mrn","value":"rt-%d"}],"name":[{"family":"Trip"}],"birthDate":"1960-01-02"},
			"request":{"method":"POST","url":"Patient"}}`, patient, n)}
		for i := range observations {
			entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Observation","status":"final",
				"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
				"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":%q},
				"effectiveDateTime":"2026-11-%02dT09:00:00Z","valueQuantity":{"value":%d,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}},
				"request":{"method":"POST","url":"Observation"}}`, patient, 1+i%28, 60+i))
		}
		return `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`
	}
	sent := func(n, observations int) []string {
		t.Helper()
		return trace.during(func() { h.Expect(200, "POST", "/fhir/", []byte(bundle(n, observations))) })
	}
	sent(0, 1) // the first write of a connection prepares its statements
	small, large := sent(1, 1), sent(2, 20)
	if len(small) > maxWriteRoundTrips {
		t.Errorf("a Patient and an Observation took %d round trips, more than %d:\n%s", len(small), maxWriteRoundTrips, strings.Join(small, "\n"))
	}
	if len(large) != len(small) {
		t.Errorf("a Patient and 20 Observations took %d round trips, one Observation %d:\n%s", len(large), len(small), strings.Join(large, "\n"))
	}
}

// maxSearchRoundTrips is what a search by two parameters may cost in round trips: its query,
// sent with the settings that make it read-only and limit its time (fhir's limitedReader).
const maxSearchRoundTrips = 1

func TestASearchIsOneRoundTrip(t *testing.T) {
	h, trace := tracedHarness(t)
	h.Expect(201, "POST", "/fhir/Patient", []byte(`{"resourceType":"Patient","name":[{"family":"Trip"}],"birthDate":"1960-01-02"}`))
	search := func() []string {
		t.Helper()
		sent := trace.during(func() { h.Expect(200, "GET", "/fhir/Patient?name=trip&birthdate=1960-01-02", nil) })
		// The audit trail's record of the search is written in the background, in batches
		// of many requests' records: not the search's own round trip.
		return slices.DeleteFunc(sent, func(s string) bool { return strings.Contains(s, "audit_event") })
	}
	search() // the first search of a connection prepares its statements
	if sent := search(); len(sent) > maxSearchRoundTrips {
		t.Errorf("a search took %d round trips, more than %d:\n%s", len(sent), maxSearchRoundTrips, strings.Join(sent, "\n"))
	}
}
