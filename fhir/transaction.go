package fhir

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// BundleConfig holds the limits and rules of transaction and batch Bundles.
type BundleConfig struct {
	// MaxEntries is the most entries one Bundle may have; more is a 413. Zero is 10,000.
	MaxEntries int
	// ReferentialIntegrity rejects a Bundle entry whose resource refers to a local resource
	// that is neither on the server nor created by the Bundle.
	ReferentialIntegrity bool
	// DefaultCount and MaxCount bound the page of a GET entry's search, as APIConfig's bound
	// a search at the REST API: NewAPI gives its processor the API's own. Zero is 20 and 1000.
	DefaultCount, MaxCount int
	// Guard, if set, is asked about every entry before anything is written; nil allows all.
	Guard Guard
	// Limits bound each entry's resource and patch, as APIConfig's bound a request's: NewAPI
	// gives its processor the API's own. Zero fields take the defaults.
	Limits ResourceLimits
}

// Access is one thing a request asks to do, as a Guard is asked about it.
type Access struct {
	// Interaction is "read", "vread", "search", "history", "create", "update", "patch" or
	// "delete".
	Interaction string
	// Type is the resource type acted on.
	Type string
	// ID is the resource acted on, once conditional urls are resolved: the id a create is to
	// be given (or the match of its ifNoneExist), the match of a conditional update, patch or
	// delete (empty when a conditional delete matches nothing). Empty for a search.
	ID string
}

// Guard decides whether an access is allowed: nil if so. A refusal should be an *Outcome,
// whose status (403, 401) and issues the client sees; any other error is taken for the
// server's own failure. A Guard may be called from several goroutines at once, and again
// for the same entry when a transaction is retried.
type Guard func(ctx context.Context, a Access) error

// BundleProcessor runs transaction and batch Bundles against the store: the engine behind
// POST /fhir and the import of Bundle files, apart from HTTP.
type BundleProcessor struct {
	store  *Store
	search *Searcher
	config BundleConfig
	logger *slog.Logger
	now    func() time.Time
}

// NewBundleProcessor returns a processor writing to store and resolving conditional urls
// and GET entries with search. Its clock is the store's.
func NewBundleProcessor(store *Store, search *Searcher, cfg BundleConfig, logger *slog.Logger) *BundleProcessor {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	if cfg.DefaultCount <= 0 {
		cfg.DefaultCount = defaultPageSize
	}
	if cfg.MaxCount < cfg.DefaultCount {
		cfg.MaxCount = max(cfg.DefaultCount, maxPageSize)
	}
	return &BundleProcessor{store: store, search: search, config: cfg, logger: logger, now: store.now}
}

// batchWorkers is how many entries of one batch Bundle are processed at once: enough to keep
// PostgreSQL busy while entries wait on it, few enough to leave connections for others.
const batchWorkers = 4

// entry is one entry of a transaction or batch Bundle, as the processor works on it.
type entry struct {
	index    int
	fullURL  string
	method   string
	url      string // request.url
	ifMatch  string
	ifNone   string // request.ifNoneExist
	resource map[string]any

	resourceType, id string // what the entry acts on, once resolved
	criteria         string // conditional url's query, if any
	existing         bool   // a conditional create that found its match
	skip             bool   // a conditional delete that matched nothing

	// results
	status  int
	version *Version
	written map[string]any // the stored body of a create or update, for the reference check
	body    []byte         // a GET's result
	outcome []byte         // a batch entry's failure
}

// where names the entry in error messages: its index and fullUrl.
func (e *entry) where() string {
	if e.fullURL != "" {
		return fmt.Sprintf("Bundle.entry[%d] (%s)", e.index, e.fullURL)
	}
	return fmt.Sprintf("Bundle.entry[%d]", e.index)
}

// atEntry rewrites an error so it names the entry, and locates its issues inside it.
func (e *entry) atEntry(err error) error {
	var o *Outcome
	if !errors.As(err, &o) {
		return err
	}
	resourceType := e.resourceType
	if resourceType == "" && e.resource != nil {
		resourceType, _ = e.resource["resourceType"].(string)
	}
	out := &Outcome{Status: o.Status}
	for _, is := range o.Issues {
		is.Diagnostics = e.where() + ": " + is.Diagnostics
		exprs := make([]string, 0, len(is.Expression))
		for _, x := range is.Expression {
			if resourceType != "" && (x == resourceType || strings.HasPrefix(x, resourceType+".")) {
				x = fmt.Sprintf("Bundle.entry[%d].resource", e.index) + strings.TrimPrefix(x, resourceType)
			}
			exprs = append(exprs, x)
		}
		if len(exprs) == 0 {
			exprs = []string{fmt.Sprintf("Bundle.entry[%d]", e.index)}
		}
		is.Expression = exprs
		out.Issues = append(out.Issues, is)
	}
	return out
}

func badEntry(index int, field, msg string) error {
	return NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("Bundle.entry[%d]: %s", index, msg), fmt.Sprintf("Bundle.entry[%d].%s", index, field))
}

// Process runs a transaction or batch Bundle and returns the response Bundle's JSON.
// A transaction is all or nothing; a failure is one Outcome naming the failing entry. base
// is the server's FHIR base as the client sees it: request urls under it are local.
func (b *BundleProcessor) Process(ctx context.Context, raw []byte, base string) ([]byte, error) {
	bundleType, entries, err := b.processBundle(ctx, raw, base, nil)
	if err != nil {
		return nil, err
	}
	resp := newBundle(bundleType+"-response", b.now())
	for _, e := range entries {
		resp.Entry = append(resp.Entry, e.responseEntry())
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(resp); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Import processes a Bundle as POST /fhir does, for a bulk import, and returns how many
// resources it created or updated. also runs in the transaction of a transaction Bundle, or
// after a batch's entries, to record the import's progress with it. A batch entry that fails
// fails the import. Request urls under the searcher's configured base URL are local.
func (b *BundleProcessor) Import(ctx context.Context, raw []byte, also func(pgx.Tx) error) (int, error) {
	bundleType, entries, err := b.processBundle(ctx, raw, b.search.baseURL, also)
	if err != nil {
		return 0, err
	}
	written := 0
	for _, e := range entries {
		if e.outcome != nil {
			return written, &Outcome{Status: e.status, Issues: []Issue{{Severity: Error, Code: Processing, Diagnostics: e.where() + " failed: " + string(e.outcome)}}}
		}
		if e.status == http.StatusCreated || (e.status == http.StatusOK && e.method == http.MethodPut) {
			written++
		}
	}
	if bundleType == "batch" && also != nil {
		if err := b.store.InTx(ctx, also); err != nil {
			return written, err
		}
	}
	return written, nil
}

type bundleTypeObserverKey struct{}

// WithBundleTypeObserver returns ctx on which a Bundle posted to the base tells observe its
// type, "transaction" or "batch", once it is read and before any entry runs: the audit trail
// names a request by what it is, which its method and path alone do not tell.
func WithBundleTypeObserver(ctx context.Context, observe func(bundleType string)) context.Context {
	return context.WithValue(ctx, bundleTypeObserverKey{}, observe)
}

func (b *BundleProcessor) processBundle(ctx context.Context, raw []byte, base string, also func(pgx.Tx) error) (string, []*entry, error) {
	// Bundle.entry is bounded by MaxEntries, with a message of its own.
	if err := b.config.Limits.checkArrays(raw, ".entry"); err != nil {
		return "", nil, err
	}
	bundleType, entries, err := b.readBundle(raw)
	if err != nil {
		return "", nil, err
	}
	if observe, ok := ctx.Value(bundleTypeObserverKey{}).(func(string)); ok {
		observe(bundleType)
	}
	switch bundleType {
	case "transaction":
		err = b.store.InTx(ctx, func(tx pgx.Tx) error {
			fresh, err := cloneEntries(entries) // each attempt starts from the Bundle as received
			if err != nil {
				return err
			}
			if err := b.runTransaction(ctx, tx, fresh, base); err != nil {
				return err
			}
			if also != nil {
				if err := also(tx); err != nil {
					return err
				}
			}
			entries = fresh
			return nil
		})
		if err != nil {
			return "", nil, err
		}
	case "batch":
		// Batch entries are independent by definition, so they run side by side, each in a
		// transaction of its own.
		work := make(chan *entry)
		var wg sync.WaitGroup
		for w := 0; w < batchWorkers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for e := range work {
					b.runBatchEntry(ctx, e, base)
				}
			}()
		}
		for _, e := range entries {
			work <- e
		}
		close(work)
		wg.Wait()
	}
	return bundleType, entries, nil
}

// readBundle checks the envelope: a Bundle of type transaction or batch whose entries each
// have a request. The entries' resources are validated later, once their references are
// resolved.
func (b *BundleProcessor) readBundle(raw []byte) (string, []*entry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var envelope struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
			Request  *struct {
				Method      string `json:"method"`
				URL         string `json:"url"`
				IfMatch     string `json:"ifMatch"`
				IfNoneExist string `json:"ifNoneExist"`
			} `json:"request"`
		} `json:"entry"`
	}
	if err := dec.Decode(&envelope); err != nil {
		return "", nil, NewOutcome(http.StatusBadRequest, Structure, "the body is not a Bundle in FHIR JSON: "+err.Error())
	}
	if envelope.ResourceType != "Bundle" {
		return "", nil, NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("POST to the base takes a Bundle, not a %q", envelope.ResourceType), "resourceType")
	}
	if envelope.Type != "transaction" && envelope.Type != "batch" {
		return "", nil, NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("a Bundle of type %q cannot be processed: send a transaction or batch", envelope.Type), "Bundle.type")
	}
	if n := len(envelope.Entry); n > b.config.MaxEntries {
		return "", nil, NewOutcome(http.StatusRequestEntityTooLarge, TooCostly, fmt.Sprintf("the Bundle has %d entries; this server takes at most %d", n, b.config.MaxEntries), "Bundle.entry")
	}
	entries := make([]*entry, len(envelope.Entry))
	fullURLs := map[string]int{}
	for i, raw := range envelope.Entry {
		if raw.Request == nil {
			return "", nil, badEntry(i, "request", "an entry of a "+envelope.Type+" needs a request")
		}
		e := &entry{index: i, fullURL: raw.FullURL, method: strings.ToUpper(raw.Request.Method), url: strings.TrimPrefix(raw.Request.URL, "/"),
			ifMatch: raw.Request.IfMatch, ifNone: raw.Request.IfNoneExist, resource: raw.Resource}
		switch e.method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		default:
			return "", nil, badEntry(i, "request.method", fmt.Sprintf("request.method %q is not GET, POST, PUT, PATCH or DELETE", raw.Request.Method))
		}
		if e.url == "" {
			return "", nil, badEntry(i, "request.url", "request.url is missing")
		}
		if (e.method == http.MethodPost || e.method == http.MethodPut || e.method == http.MethodPatch) && e.resource == nil {
			return "", nil, badEntry(i, "resource", e.method+" needs a resource")
		}
		if e.fullURL != "" {
			if j, dup := fullURLs[e.fullURL]; dup && envelope.Type == "transaction" {
				return "", nil, badEntry(i, "fullUrl", fmt.Sprintf("fullUrl %s is also that of entry %d", e.fullURL, j))
			}
			fullURLs[e.fullURL] = i
		}
		entries[i] = e
	}
	return envelope.Type, entries, nil
}

func cloneEntries(entries []*entry) ([]*entry, error) {
	out := make([]*entry, len(entries))
	for i, e := range entries {
		c := *e
		if e.resource != nil {
			raw, err := json.Marshal(e.resource)
			if err != nil {
				return nil, err
			}
			res, err := decodeResource(raw)
			if err != nil {
				return nil, err
			}
			c.resource = res.Body
		}
		out[i] = &c
	}
	return out, nil
}

// The order in which the specification has a transaction's entries processed.
var methodOrder = map[string]int{http.MethodDelete: 0, http.MethodPost: 1, http.MethodPut: 2, http.MethodPatch: 2, http.MethodGet: 3, http.MethodHead: 3}

// runTransaction processes every entry inside tx: first it settles which resource each entry
// is about (assigning ids to creates, resolving conditional urls), then asks the Guard about
// every entry, then rewrites the Bundle's references (urn:uuid placeholders, conditional references) to those ids, then
// writes in the specification's order, then checks local references, then reads.
func (b *BundleProcessor) runTransaction(ctx context.Context, tx pgx.Tx, entries []*entry, base string) error {
	ordered := append([]*entry(nil), entries...)
	sort.SliceStable(ordered, func(i, j int) bool { return methodOrder[ordered[i].method] < methodOrder[ordered[j].method] })

	for _, e := range ordered {
		if err := b.resolveTarget(ctx, tx, e, base); err != nil {
			return e.atEntry(err)
		}
	}
	if failed, err := b.matchCreates(ctx, tx, ordered); failed != nil {
		return failed.atEntry(err)
	} else if err != nil {
		return err
	}
	for _, e := range entries { // in the Bundle's order, so which refusal is reported is plain
		if err := b.authorize(ctx, e, base); err != nil {
			return e.atEntry(err)
		}
	}
	placeholders := map[string]string{}
	for _, e := range ordered {
		if e.fullURL != "" && e.resourceType != "" && e.id != "" {
			placeholders[e.fullURL] = e.resourceType + "/" + e.id
		}
	}
	conditional := map[string]string{}
	for _, e := range ordered {
		if err := b.rewriteReferences(ctx, tx, e, placeholders, conditional); err != nil {
			return e.atEntry(err)
		}
	}
	if err := b.createAll(ctx, tx, ordered); err != nil {
		return err
	}
	var written []*entry
	for _, e := range ordered {
		if e.method == http.MethodGet || e.method == http.MethodHead {
			continue
		}
		if e.version == nil {
			if err := b.write(ctx, tx, e); err != nil {
				return e.atEntry(err)
			}
		}
		written = append(written, e)
	}
	if b.config.ReferentialIntegrity {
		if failed, err := b.checkReferences(ctx, tx, written); failed != nil {
			return failed.atEntry(err)
		} else if err != nil {
			return err
		}
	}
	if err := b.store.Flush(ctx, tx); err != nil {
		return placeIssues(err, ordered)
	}
	// An entry answers with its resource as it will be committed: a write hook may have
	// written it again (a requested Subscription is stored active).
	for _, e := range ordered {
		if e.version != nil && e.method != http.MethodGet && e.method != http.MethodHead {
			v, err := b.store.settle(ctx, tx, e.version)
			if err != nil {
				return e.atEntry(err)
			}
			e.version = v
		}
	}
	for _, e := range ordered {
		if e.method == http.MethodGet || e.method == http.MethodHead {
			if err := b.readEntry(ctx, tx, e, base); err != nil {
				return e.atEntry(err)
			}
		}
	}
	return nil
}

// createAll validates a transaction's creates and stores them in one round trip. A create
// that found its match (ifNoneExist) writes nothing.
func (b *BundleProcessor) createAll(ctx context.Context, tx DBTX, entries []*entry) error {
	var creates []*entry
	for _, e := range entries {
		if e.method == http.MethodPost && !e.existing {
			creates = append(creates, e)
		}
	}
	if len(creates) == 0 {
		return nil
	}
	resources, err := b.validateAll(creates)
	if err != nil {
		return err
	}
	for i, e := range creates {
		resources[i].ID = e.id
	}
	versions, err := b.store.CreateBatch(ctx, tx, resources)
	if err != nil {
		return err
	}
	for i, e := range creates {
		e.version, e.status, e.written = versions[i], http.StatusCreated, resources[i].Body
	}
	return nil
}

// maxFailedEntries bounds how many invalid entries one outcome reports: enough to fix a
// Bundle in a few rounds, not a 10,000-entry Bundle's every problem at once.
const maxFailedEntries = 50

// validateAll parses and validates the entries' resources with google/fhir, spread over the
// CPUs: at about 0.2 ms a resource, a large Bundle would otherwise parse on one core while the
// others wait. Every invalid entry is reported (up to maxFailedEntries), in entry order, so a
// client can fix them in one go and the outcome does not depend on scheduling.
func (b *BundleProcessor) validateAll(entries []*entry) ([]*Resource, error) {
	resources := make([]*Resource, len(entries))
	errs := make([]error, len(entries))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, e := range entries {
		g.Go(func() error {
			resources[i], errs[i] = b.validate(e)
			return nil
		})
	}
	_ = g.Wait() // the workers report through errs
	var failed *Outcome
	reported := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		var o *Outcome
		if !errors.As(entries[i].atEntry(err), &o) {
			return nil, err // the server's failure, not the client's
		}
		if failed == nil {
			failed = &Outcome{Status: o.Status}
		}
		if reported++; reported <= maxFailedEntries {
			failed.Issues = append(failed.Issues, o.Issues...)
		}
	}
	if failed == nil {
		return resources, nil
	}
	if reported > maxFailedEntries {
		failed.Issues = append(failed.Issues, Issue{Severity: Information, Code: Informational, Expression: []string{"Bundle.entry"},
			Diagnostics: fmt.Sprintf("%d more entries are invalid; only the first %d are reported", reported-maxFailedEntries, maxFailedEntries)})
	}
	return nil, failed
}

// runBatchEntry processes one batch entry in a transaction of its own; its failure becomes
// its response, and the other entries go on.
func (b *BundleProcessor) runBatchEntry(ctx context.Context, e *entry, base string) {
	var done *entry
	err := b.store.InTx(ctx, func(tx pgx.Tx) error {
		fresh, err := cloneEntries([]*entry{e})
		if err != nil {
			return err
		}
		c := fresh[0]
		if err := b.resolveTarget(ctx, tx, c, base); err != nil {
			return err
		}
		if _, err := b.matchCreates(ctx, tx, fresh); err != nil {
			return err
		}
		if err := b.authorize(ctx, c, base); err != nil {
			return err
		}
		if c.method == http.MethodGet || c.method == http.MethodHead {
			if err := b.readEntry(ctx, tx, c, base); err != nil {
				return err
			}
			done = c
			return nil
		}
		if err := b.rewriteReferences(ctx, tx, c, nil, map[string]string{}); err != nil {
			return err
		}
		if err := b.write(ctx, tx, c); err != nil {
			return err
		}
		if b.config.ReferentialIntegrity {
			if _, err := b.checkReferences(ctx, tx, []*entry{c}); err != nil {
				return err // located below, with the entry's other failures
			}
		}
		if c.version != nil { // as it will be committed, after the write hooks (see runTransaction)
			if c.version, err = b.store.settle(ctx, tx, c.version); err != nil {
				return err
			}
		}
		done = c
		return nil
	})
	if err == nil {
		*e = *done
		return
	}
	var o *Outcome
	if !errors.As(e.atEntry(err), &o) {
		o = NewOutcome(http.StatusInternalServerError, Exception, "processing failed")
		b.logger.Error("batch entry failed", "entry", e.index, "error", err)
	}
	e.status = o.Status
	e.outcome, _ = MarshalOutcome(o.Issues, false)
}

var conditionalReference = regexp.MustCompile(`^([A-Z][A-Za-z]+)\?(.+)$`)

// matchCreates settles the conditional creates among entries, which resolveTarget leaves
// without an id, in one round trip: each becomes its ifNoneExist's match, or a new resource.
// On failure it returns the entry whose criteria failed, if it was one entry's.
func (b *BundleProcessor) matchCreates(ctx context.Context, tx DBTX, entries []*entry) (*entry, error) {
	var creates []*entry
	var ms []Match
	for _, e := range entries {
		if e.method == http.MethodPost && e.ifNone != "" && e.id == "" {
			creates = append(creates, e)
			ms = append(ms, Match{ResourceType: e.resourceType, Criteria: e.ifNone, Purpose: "ifNoneExist"})
		}
	}
	if len(creates) == 0 {
		return nil, nil
	}
	ids, err := b.search.MatchAll(ctx, tx, ms)
	var one *MatchError
	if errors.As(err, &one) {
		return creates[one.Index], one.Err
	}
	if err != nil {
		return nil, err
	}
	for i, e := range creates {
		if ids[i] != "" {
			e.id, e.existing = ids[i], true
		} else {
			e.id = NewID()
		}
	}
	return nil, nil
}

// resolveTarget works out which resource an entry acts on: a new id for a plain create, the
// id or the match of a conditional url for the others. A conditional create is left for
// matchCreates, which matches all of them at once.
func (b *BundleProcessor) resolveTarget(ctx context.Context, tx DBTX, e *entry, base string) error {
	u := e.url
	if base != "" {
		u = strings.TrimPrefix(u, base+"/")
	}
	path, query, _ := strings.Cut(u, "?")
	parts := strings.Split(path, "/")
	e.resourceType = parts[0]
	if !IsResourceType(e.resourceType) && e.method != http.MethodGet {
		return NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("request.url %q does not name a resource type", e.url), fmt.Sprintf("Bundle.entry[%d].request.url", e.index))
	}
	if e.resource != nil {
		if t, _ := e.resource["resourceType"].(string); t != e.resourceType && e.method != http.MethodPatch {
			return NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("the resource is a %s but request.url is for %s", t, e.resourceType), fmt.Sprintf("Bundle.entry[%d].resource", e.index))
		}
	}
	switch e.method {
	case http.MethodPost:
		if e.ifNone == "" {
			e.id = NewID()
		}
	case http.MethodPut, http.MethodPatch, http.MethodDelete:
		if len(parts) >= 2 && parts[1] != "" {
			e.id = parts[1]
			if !ValidID(e.id) {
				return NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q is not a valid resource id", e.id), fmt.Sprintf("Bundle.entry[%d].request.url", e.index))
			}
			return nil
		}
		if query == "" {
			return NewOutcome(http.StatusBadRequest, Value, e.method+" needs Type/id or Type?criteria in request.url", fmt.Sprintf("Bundle.entry[%d].request.url", e.index))
		}
		e.criteria = query
		match, err := b.search.MatchOne(ctx, tx, e.resourceType, query, "conditional "+strings.ToLower(e.method))
		if err != nil {
			return err
		}
		switch {
		case match != "":
			e.id = match
		case e.method == http.MethodDelete:
			e.skip = true
		case e.method == http.MethodPatch:
			return NewOutcome(http.StatusNotFound, NotFound, "no "+e.resourceType+" matches the conditional patch")
		default: // a conditional update that matches nothing creates
			if id, _ := e.resource["id"].(string); id != "" {
				e.id = id
			} else {
				e.id = NewID()
			}
		}
	}
	return nil
}

// rewriteReferences points the entry's references at resolved ids: a placeholder fullUrl
// (urn:uuid:, urn:oid:, or an absolute URL) becomes Type/id wherever it appears as a
// reference, nested in extensions and contained resources too; a conditional reference
// (Type?criteria) becomes its one match.
func (b *BundleProcessor) rewriteReferences(ctx context.Context, tx DBTX, e *entry, placeholders, conditional map[string]string) error {
	if e.resource == nil || e.method == http.MethodPatch {
		return nil
	}
	var failure error
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			for k, child := range x {
				ref, ok := child.(string)
				if k != "reference" || !ok {
					walk(child, path+"."+k)
					continue
				}
				if to, ok := placeholders[ref]; ok {
					x[k] = to
				} else if m := conditionalReference.FindStringSubmatch(ref); m != nil {
					if to, ok := conditional[ref]; ok {
						x[k] = to
						continue
					}
					match, err := b.search.MatchOne(ctx, tx, m[1], m[2], "conditional reference "+ref)
					if err == nil && match == "" {
						err = NewOutcome(http.StatusBadRequest, NotFound, "the conditional reference "+ref+" matches nothing", path)
					}
					if err != nil {
						if failure == nil {
							failure = err
						}
						continue
					}
					conditional[ref] = m[1] + "/" + match
					x[k] = conditional[ref]
				} else if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") {
					if failure == nil {
						failure = NewOutcome(http.StatusBadRequest, NotFound, "the reference "+ref+" is to no entry of the Bundle", path)
					}
				}
			}
		case []any:
			for _, child := range x {
				walk(child, path)
			}
		}
	}
	walk(e.resource, e.resourceType)
	return failure
}

// write performs a resolved entry's create, update, patch or delete, validating its
// resource with google/fhir first.
func (b *BundleProcessor) write(ctx context.Context, tx DBTX, e *entry) error {
	switch e.method {
	case http.MethodDelete:
		if e.skip {
			e.status = http.StatusNoContent
			return nil
		}
		v, err := b.store.Delete(ctx, tx, e.resourceType, e.id)
		e.status, e.version = http.StatusNoContent, v
		return err
	case http.MethodPost:
		if e.existing {
			v, err := b.store.Read(ctx, tx, e.resourceType, e.id)
			e.status, e.version = http.StatusOK, v
			return err
		}
		res, err := b.validate(e)
		if err != nil {
			return err
		}
		res.ID = e.id
		e.version, err = b.store.CreateWithID(ctx, tx, res)
		e.status, e.written = http.StatusCreated, res.Body
		return err
	case http.MethodPut:
		if bodyID, _ := e.resource["id"].(string); e.criteria == "" && bodyID != e.id {
			return NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("the resource's id %q does not match request.url's %q", bodyID, e.id), e.resourceType+".id")
		}
		res, err := b.validate(e)
		if err != nil {
			return err
		}
		res.ID = e.id
		match, err := parseETag(e.ifMatch)
		if err != nil {
			return err
		}
		result, err := b.store.Update(ctx, tx, res, match)
		if err != nil {
			return err
		}
		e.version, e.status, e.written = result.Version, http.StatusOK, res.Body
		if result.Created {
			e.status = http.StatusCreated
		}
		return nil
	case http.MethodPatch:
		patch, err := patchFromBinary(e)
		if err != nil {
			return err
		}
		match, err := parseETag(e.ifMatch)
		if err != nil {
			return err
		}
		result, err := b.store.applyPatch(ctx, tx, e.resourceType, e.id, patch, match, b.config.Limits)
		e.version, e.status = result.Version, http.StatusOK
		return err
	}
	return nil
}

func (b *BundleProcessor) validate(e *entry) (*Resource, error) {
	raw, err := json.Marshal(e.resource)
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// patchFromBinary reads a transaction's PATCH: a Binary holding a JSON Patch document.
func patchFromBinary(e *entry) (jsonpatch.Patch, error) {
	if t, _ := e.resource["resourceType"].(string); t != "Binary" || e.resource["contentType"] != "application/json-patch+json" {
		return nil, NewOutcome(http.StatusUnsupportedMediaType, NotSupported, "a PATCH entry takes a Binary with contentType application/json-patch+json (FHIRPath Patch is not supported)", "resource")
	}
	data, _ := e.resource["data"].(string)
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil, NewOutcome(http.StatusBadRequest, Value, "Binary.data is not base64", "Binary.data")
	}
	patch, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return nil, NewOutcome(http.StatusBadRequest, Structure, "Binary.data is not a JSON Patch document: "+err.Error(), "Binary.data")
	}
	return patch, nil
}

// checkReferences refuses local references (Type/id) in written resources to resources that
// do not exist, or are deleted, once the Bundle's own writes are in. Like matchCreates, it
// returns the entry at fault with an outcome its caller locates.
func (b *BundleProcessor) checkReferences(ctx context.Context, tx DBTX, written []*entry) (*entry, error) {
	type ref struct {
		e    *entry
		path string
	}
	// What the Bundle itself wrote exists: only references beyond it are looked up, and a
	// Bundle that refers to nothing else (a new Patient and its Observations) costs no query.
	inBundle := map[string]bool{}
	for _, e := range written {
		if e.version != nil && !e.version.Deleted && e.method != http.MethodDelete {
			inBundle[e.version.Path()] = true
		}
	}
	refs := map[string]ref{}
	for _, e := range written {
		if e.version == nil || e.version.JSON == nil || e.method == http.MethodDelete {
			continue
		}
		body := e.written
		if body == nil { // a patch: its result was built inside applyPatch
			if err := json.Unmarshal(e.version.JSON, &body); err != nil {
				return nil, err
			}
		}
		collectLocalReferences(body, e.resourceType, func(target, path string) {
			if _, seen := refs[target]; !seen && !inBundle[target] {
				refs[target] = ref{e, path}
			}
		})
	}
	if len(refs) == 0 {
		return nil, nil
	}
	var types, ids []string
	for target := range refs {
		t, id, _ := strings.Cut(target, "/")
		types, ids = append(types, t), append(ids, id)
	}
	rows, err := tx.Query(ctx, `SELECT k.t, k.i FROM unnest($1::text[], $2::text[]) AS k(t, i)
		WHERE NOT EXISTS (SELECT 1 FROM resource r WHERE r.resource_type = k.t AND r.resource_id = k.i AND NOT r.deleted)
		ORDER BY 1, 2`, types, ids)
	if err != nil {
		return nil, fmt.Errorf("checking references: %w", err)
	}
	missing, err := collectPairs(rows, nil)
	if err != nil || len(missing) == 0 {
		return nil, err
	}
	target := missing[0][0] + "/" + missing[0][1]
	r := refs[target]
	return r.e, NewOutcome(http.StatusBadRequest, NotFound,
		fmt.Sprintf("%s refers to %s, which is neither on the server nor in the Bundle", r.path, target), r.path)
}

// A local reference: Type/id, optionally with /_history/n.
var localReference = regexp.MustCompile(`^([A-Z][A-Za-z]+)/([^/]+)(?:/_history/[^/]+)?$`)

func collectLocalReferences(v any, path string, found func(target, path string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if ref, ok := child.(string); ok && k == "reference" {
				if m := localReference.FindStringSubmatch(ref); m != nil && IsResourceType(m[1]) && ValidID(m[2]) {
					found(m[1]+"/"+m[2], path)
				}
				continue
			}
			if k == "contained" { // contained resources are checked with their container's
				continue
			}
			collectLocalReferences(child, path+"."+k, found)
		}
	case []any:
		for _, child := range x {
			collectLocalReferences(child, path, found)
		}
	}
}

// readEntry performs a GET entry: a read, vread or search.
func (b *BundleProcessor) readEntry(ctx context.Context, tx DBTX, e *entry, base string) error {
	interaction, parts, query := getTarget(e.url, base)
	switch interaction {
	case "read":
		v, err := b.store.Read(ctx, tx, parts[0], parts[1])
		if err != nil {
			return err
		}
		e.status, e.version, e.body = http.StatusOK, v, v.JSON
	case "vread":
		vid, err := strconv.Atoi(parts[3])
		if err != nil {
			return NewOutcome(http.StatusBadRequest, Value, "not a version: "+parts[3])
		}
		v, err := b.store.VRead(ctx, tx, parts[0], parts[1], vid)
		if err != nil {
			return err
		}
		e.status, e.version, e.body = http.StatusOK, v, v.JSON
	case "search":
		params, err := url.ParseQuery(query)
		if err != nil {
			return NewOutcome(http.StatusBadRequest, Value, "request.url has a malformed query")
		}
		q, err := b.search.parseSearch([]string{parts[0]}, params, false, b.config.DefaultCount, b.config.MaxCount)
		if err != nil {
			return err
		}
		q.base = base
		p, err := b.search.run(ctx, tx, []string{parts[0]}, q)
		if err != nil {
			return err
		}
		set := newBundle("searchset", b.now())
		set.Total = p.total
		for _, v := range p.matches {
			set.Entry = append(set.Entry, bundleEntry{FullURL: base + "/" + v.Path(), Resource: v.JSON, Search: &entrySearch{Mode: "match"}})
		}
		if e.body, err = json.Marshal(set); err != nil {
			return err
		}
		e.status = http.StatusOK
	default:
		return NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("GET %s is not supported in a Bundle", e.url))
	}
	return nil
}

// getTarget classifies a GET entry's url as readEntry performs it: "read" (Type/id), "vread"
// (Type/id/_history/n) or "search" (Type?criteria), or "" for what a Bundle does not support.
func getTarget(rawURL, base string) (interaction string, parts []string, query string) {
	u := strings.TrimPrefix(rawURL, base+"/")
	path, query, _ := strings.Cut(u, "?")
	parts = strings.Split(path, "/")
	switch {
	case len(parts) == 2 && parts[1] != "":
		return "read", parts, query
	case len(parts) == 4 && parts[2] == "_history":
		return "vread", parts, query
	case len(parts) == 1 && IsResourceType(parts[0]):
		return "search", parts, query
	}
	return "", parts, query
}

// authorize asks the Guard, if there is one, about an entry whose target is resolved.
func (b *BundleProcessor) authorize(ctx context.Context, e *entry, base string) error {
	if b.config.Guard == nil {
		return nil
	}
	a := Access{Type: e.resourceType, ID: e.id}
	switch e.method {
	case http.MethodPost:
		a.Interaction = "create"
	case http.MethodPut:
		a.Interaction = "update"
	case http.MethodPatch:
		a.Interaction = "patch"
	case http.MethodDelete:
		a.Interaction = "delete"
	default: // GET and HEAD
		interaction, parts, _ := getTarget(e.url, base)
		if interaction == "" {
			return nil // readEntry refuses it before anything is read
		}
		a = Access{Interaction: interaction, Type: parts[0]}
		if interaction != "search" {
			a.ID = parts[1]
		}
	}
	return b.config.Guard(ctx, a)
}

func (e *entry) responseEntry() bundleEntry {
	out := bundleEntry{FullURL: e.fullURL, Response: &entryResponse{Status: statusLine(e.status)}}
	if e.outcome != nil {
		out.Response.Outcome = e.outcome
		return out
	}
	if v := e.version; v != nil && !v.Deleted {
		out.Response.Etag = v.ETag()
		out.Response.LastModified = v.LastUpdated.UTC().Format(time.RFC3339Nano)
		if e.method != http.MethodGet && e.method != http.MethodHead {
			out.Response.Location = v.Path() + "/_history/" + strconv.Itoa(v.VersionID)
		}
	}
	if e.body != nil && e.method == http.MethodGet {
		out.Resource = e.body
	}
	return out
}

func statusLine(code int) string {
	return strconv.Itoa(code) + " " + http.StatusText(code)
}
