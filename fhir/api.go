package fhir

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// APIConfig holds the REST API's settings.
type APIConfig struct {
	// BaseURL is the server's FHIR base as clients reach it, e.g. https://registry.example/fhir.
	// Empty: taken from each request (scheme, Host header, /fhir).
	BaseURL string
	// DefaultCount and MaxCount bound the page size of searches and histories.
	DefaultCount, MaxCount int
	// Bundles are the limits and rules of transactions and batches.
	Bundles BundleConfig
	// BundleTimeout is the longest any one statement of a transaction or batch Bundle may
	// run; past it the Bundle is a 422 and, for a transaction, nothing is written. Zero is
	// DefaultBundleTimeout.
	BundleTimeout time.Duration
	// Search bounds what one search may cost; NewAPI gives them to its Searcher. Zero
	// fields take DefaultSearchLimits'.
	Search SearchLimits
	// Limits bound what one resource may cost, in a request of its own or a Bundle's entry.
	Limits ResourceLimits
	// Security is the CapabilityStatement's rest.security: how clients get their tokens.
	Security map[string]any
	// InValueSet tells whether system|code is in the value set with url; $validate checks a
	// profile's required bindings with it. Nil: bindings are not checked.
	InValueSet func(url, system, code string) (bool, error)
	// SoftwareVersion is the CapabilityStatement's software.version; empty: the build's
	// module version or commit, when the build recorded one.
	SoftwareVersion string
	// SupportedProfiles are the profiles the server publishes, by the resource type they
	// constrain: the CapabilityStatement's rest.resource[].supportedProfile.
	SupportedProfiles map[string][]string
}

// API is the FHIR R4 REST interface at /fhir.
type API struct {
	capability *capabilityStatement
	store      *Store
	search     *Searcher
	logger     *slog.Logger
	config     APIConfig
	bundles    *BundleProcessor
	now        func() time.Time
}

// The page sizes of searches and histories when none are configured.
const (
	defaultPageSize = 20
	maxPageSize     = 1000
)

// DefaultBundleTimeout is the statement time limit of Bundles when none is configured: a
// statement of a 10,000-entry transaction does more than a search's, so it gets longer.
const DefaultBundleTimeout = time.Minute

// NewAPI returns the REST API over store.
func NewAPI(store *Store, search *Searcher, logger *slog.Logger, cfg APIConfig) *API {
	if cfg.DefaultCount <= 0 {
		cfg.DefaultCount = defaultPageSize
	}
	if cfg.MaxCount < cfg.DefaultCount {
		cfg.MaxCount = max(cfg.DefaultCount, maxPageSize)
	}
	if cfg.BundleTimeout <= 0 {
		cfg.BundleTimeout = DefaultBundleTimeout
	}
	search.SetLimits(cfg.Search)
	cfg.Search = search.Limits()
	// A GET entry in a Bundle pages like the same search sent on its own.
	cfg.Bundles.DefaultCount, cfg.Bundles.MaxCount = cfg.DefaultCount, cfg.MaxCount
	cfg.Limits = cfg.Limits.WithDefaults()
	cfg.Bundles.Limits = cfg.Limits
	bundles := NewBundleProcessor(store, search, cfg.Bundles, logger)
	return &API{store: store, search: search, logger: logger, config: cfg, bundles: bundles, now: store.now, capability: &capabilityStatement{}}
}

// Bundles is the processor behind POST /fhir, with the API's limits and page sizes, for
// callers that load Bundles without HTTP.
func (a *API) Bundles() *BundleProcessor { return a.bundles }

// ProcessBundle runs a transaction or batch Bundle as POST /fhir does: see
// BundleProcessor.Process.
func (a *API) ProcessBundle(ctx context.Context, raw []byte, base string) ([]byte, error) {
	return a.bundles.Process(ctx, raw, base)
}

// Register mounts the API's routes on e.
func (a *API) Register(e *echo.Echo) {
	g := e.Group("/fhir", negotiate)
	g.GET("", a.systemSearch)
	g.POST("", a.bundle)
	g.GET("/metadata", a.capabilities)
	g.GET("/_history", a.history)
	g.GET("/:type", a.typeSearch)
	g.POST("/:type/_search", a.typeSearch)
	g.GET("/:type/_search", a.typeSearch) // not in the specification, but clients send it
	g.POST("/:type", a.create)
	g.PUT("/:type", a.conditionalUpdate)
	g.PATCH("/:type", a.conditionalPatch)
	g.DELETE("/:type", a.conditionalDelete)
	g.GET("/:type/_history", a.history)
	g.GET("/Patient/$everything", a.everything)
	g.GET("/Patient/:id/$everything", a.everything)
	g.POST("/:type/$validate", a.validate)
	g.POST("/:type/:id/$validate", a.validate)
	g.GET("/:type/:id", a.read)
	g.PUT("/:type/:id", a.update)
	g.PATCH("/:type/:id", a.patch)
	g.DELETE("/:type/:id", a.delete)
	g.GET("/:type/:id/_history", a.history)
	g.GET("/:type/:id/_history/:vid", a.vread)
	// Compartment search; the same routes answer operations the server does not have at
	// instance level, and POST /:type/:id those at type level, with a 404 naming them.
	g.GET("/:type/:id/:compartment", a.compartmentSearch)
	g.GET("/:type/:id/:compartment/_search", a.compartmentSearch)
	g.POST("/:type/:id/:compartment/_search", a.compartmentSearch)
	g.POST("/:type/:id/:compartment", a.instancePost)
	g.POST("/:type/:id", a.typePost)
}

// ValidID tells whether s is a valid FHIR id (R4's [A-Za-z0-9\-\.]{1,64}, except "." and
// "..", which URLs cannot carry as ids): the one check of ids in URLs, bodies, references and
// parameters, in every package.
func ValidID(s string) bool { return fhirpath.ValidID(s) }

// target reads and checks the resource type and id in the URL. A "type" or "id" that names
// an operation ($graphql, Patient/$lastn) is one the server does not have: the routes of
// those it has are more specific.
func target(c echo.Context) (resourceType, id string, err error) {
	resourceType, id = c.Param("type"), c.Param("id")
	if strings.HasPrefix(resourceType, "$") {
		return "", "", operationNotSupported(resourceType, "", "system")
	}
	if strings.HasPrefix(id, "$") && IsResourceType(resourceType) {
		return "", "", operationNotSupported(id, resourceType, "type")
	}
	if !IsResourceType(resourceType) {
		return "", "", NewOutcome(http.StatusNotFound, NotSupported, fmt.Sprintf("%q is not an R4 resource type", resourceType))
	}
	if slices.Contains(c.ParamNames(), "id") && !ValidID(id) {
		return "", "", NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q is not a valid resource id (1-64 of A-Z a-z 0-9 - ., not . or ..)", id))
	}
	return resourceType, id, nil
}

func (a *API) baseURL(c echo.Context) string {
	if a.config.BaseURL != "" {
		return strings.TrimSuffix(a.config.BaseURL, "/")
	}
	return c.Scheme() + "://" + c.Request().Host + "/fhir"
}

// bundle answers POST /fhir: a transaction or batch Bundle, run by the API's processor.
func (a *API) bundle(c echo.Context) error {
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err // a body over the limit: echo's 413
	}
	ctx := WithStatementTimeout(c.Request().Context(), a.config.BundleTimeout, "CARTREG_BUNDLE_TIMEOUT")
	out, err := a.bundles.Process(ctx, raw, a.baseURL(c))
	if err != nil {
		return StatementTimeoutOutcome(ctx, err)
	}
	return writeJSON(c, http.StatusOK, out)
}

// readResource parses the request body as a resource of the URL's type.
func (a *API) readResource(c echo.Context, resourceType string) (*Resource, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return nil, err // a body over the limit: echo's 413
	}
	if err := a.config.Limits.checkArrays(body, ""); err != nil {
		return nil, err
	}
	res, err := Parse(body)
	if err != nil {
		return nil, err
	}
	if res.Type != resourceType {
		return nil, NewOutcome(http.StatusBadRequest, Invalid,
			fmt.Sprintf("the body is a %s but the URL is for %s", res.Type, resourceType), "resourceType")
	}
	return res, nil
}

// ifMatch reads an If-Match header: W/"3", "3" or 3.
func ifMatch(c echo.Context) (*int, error) {
	return parseETag(c.Request().Header.Get("If-Match"))
}

// parseETag reads a version from an entity tag, as If-Match carries it.
func parseETag(raw string) (*int, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, nil
	}
	v, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(raw, "W/"), `"`))
	if err != nil || v < 1 {
		return nil, NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("If-Match %q is not a version such as W/\"3\"", raw))
	}
	return &v, nil
}

func (a *API) read(c echo.Context) error {
	resourceType, id, err := target(c)
	if err != nil {
		return err
	}
	v, err := a.store.Read(c.Request().Context(), a.store.db, resourceType, id)
	if err != nil {
		return err
	}
	if notModified(c.Request(), v) {
		setVersionHeaders(c, v)
		return c.NoContent(http.StatusNotModified)
	}
	return a.respond(c, http.StatusOK, v, preference{Return: "representation"}, "")
}

// notModified says whether a read's conditions let it answer 304: If-None-Match naming the
// version's ETag, or, without If-None-Match (which takes precedence, RFC 9110 13.2.2),
// If-Modified-Since no earlier than the version's Last-Modified. HTTP dates have whole
// seconds, so the version's time is cut to its second, as Last-Modified sends it. A date the
// server cannot read is ignored, as RFC 9110 says.
func notModified(r *http.Request, v *Version) bool {
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		return strings.TrimPrefix(inm, "W/") == strings.TrimPrefix(v.ETag(), "W/")
	}
	ims := r.Header.Get("If-Modified-Since")
	if ims == "" {
		return false
	}
	since, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	return !v.LastUpdated.Truncate(time.Second).After(since)
}

func (a *API) vread(c echo.Context) error {
	resourceType, id, err := target(c)
	if err != nil {
		return err
	}
	vid, err := strconv.Atoi(c.Param("vid"))
	if err != nil || vid < 1 {
		return NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q is not a version id", c.Param("vid")))
	}
	v, err := a.store.VRead(c.Request().Context(), a.store.db, resourceType, id, vid)
	if err != nil {
		return err
	}
	if notModified(c.Request(), v) {
		setVersionHeaders(c, v)
		return c.NoContent(http.StatusNotModified)
	}
	return a.respond(c, http.StatusOK, v, preference{Return: "representation"}, "")
}

func (a *API) create(c echo.Context) error {
	resourceType, _, err := target(c)
	if err != nil {
		return err
	}
	res, err := a.readResource(c, resourceType)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	condition := strings.TrimSpace(c.Request().Header.Get("If-None-Exist"))
	var v *Version
	var existed bool
	err = a.store.InTx(ctx, func(tx pgx.Tx) error {
		if condition != "" {
			match, err := a.search.MatchOne(ctx, tx, resourceType, condition, "If-None-Exist")
			if err != nil {
				return err
			}
			if match != "" {
				existed = true
				v, err = a.store.Read(ctx, tx, resourceType, match)
				return err
			}
		}
		if v, err = a.store.Create(ctx, tx, res.Clone()); err != nil {
			return err
		}
		v, err = a.store.settle(ctx, tx, v)
		return err
	})
	if err != nil {
		return err
	}
	if existed {
		return a.respond(c, http.StatusOK, v, preferences(c.Request()), "an existing resource matched If-None-Exist: nothing was created")
	}
	c.Response().Header().Set("Location", a.baseURL(c)+"/"+v.Path()+"/_history/"+strconv.Itoa(v.VersionID))
	return a.respond(c, http.StatusCreated, v, preferences(c.Request()), "created "+v.Path())
}

func (a *API) update(c echo.Context) error {
	resourceType, id, err := target(c)
	if err != nil {
		return err
	}
	res, err := a.readResource(c, resourceType)
	if err != nil {
		return err
	}
	if res.ID == "" {
		return NewOutcome(http.StatusBadRequest, Required, "an update must carry the resource's id, matching the URL", resourceType+".id")
	}
	if res.ID != id {
		return NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("the body's id %q does not match the URL's %q", res.ID, id), resourceType+".id")
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	return a.doUpdate(c, res, match)
}

func (a *API) doUpdate(c echo.Context, res *Resource, match *int) error {
	ctx := c.Request().Context()
	var result UpdateResult
	err := a.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		if result, err = a.store.Update(ctx, tx, res.Clone(), match); err != nil {
			return err
		}
		result.Version, err = a.store.settle(ctx, tx, result.Version)
		return err
	})
	if err != nil {
		return err
	}
	status, message := http.StatusOK, "updated "+result.Version.Path()
	if result.Created {
		status, message = http.StatusCreated, "created "+result.Version.Path()
		c.Response().Header().Set("Location", a.baseURL(c)+"/"+result.Version.Path()+"/_history/"+strconv.Itoa(result.Version.VersionID))
	}
	return a.respond(c, status, result.Version, preferences(c.Request()), message)
}

// conditionalUpdate is PUT /Type?criteria: update the one match, create if none (with the
// body's id if it has one), refuse if several match.
func (a *API) conditionalUpdate(c echo.Context) error {
	resourceType, _, err := target(c)
	if err != nil {
		return err
	}
	if c.QueryString() == "" {
		return NewOutcome(http.StatusMethodNotAllowed, NotSupported, "PUT needs a resource id (PUT /"+resourceType+"/{id}) or search criteria")
	}
	res, err := a.readResource(c, resourceType)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	var result UpdateResult
	err = a.store.InTx(ctx, func(tx pgx.Tx) error {
		match, err := a.search.MatchOne(ctx, tx, resourceType, c.QueryString(), "conditional update")
		if err != nil {
			return err
		}
		r := res.Clone()
		switch {
		case match != "" && r.ID != "" && r.ID != match:
			return NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("the body's id %q is not that of the matching resource %q", r.ID, match), resourceType+".id")
		case match != "":
			r.ID = match
		case r.ID == "":
			result.Created = true
			if result.Version, err = a.store.Create(ctx, tx, r); err != nil {
				return err
			}
			result.Version, err = a.store.settle(ctx, tx, result.Version)
			return err
		}
		if result, err = a.store.Update(ctx, tx, r, nil); err != nil {
			return err
		}
		result.Version, err = a.store.settle(ctx, tx, result.Version)
		return err
	})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if result.Created {
		status = http.StatusCreated
		c.Response().Header().Set("Location", a.baseURL(c)+"/"+result.Version.Path()+"/_history/"+strconv.Itoa(result.Version.VersionID))
	}
	return a.respond(c, status, result.Version, preferences(c.Request()), "")
}

func (a *API) patch(c echo.Context) error {
	resourceType, id, err := target(c)
	if err != nil {
		return err
	}
	return a.doPatch(c, resourceType, func(context.Context, pgx.Tx) (string, error) { return id, nil })
}

func (a *API) conditionalPatch(c echo.Context) error {
	resourceType, _, err := target(c)
	if err != nil {
		return err
	}
	return a.doPatch(c, resourceType, func(ctx context.Context, tx pgx.Tx) (string, error) {
		id, err := a.search.MatchOne(ctx, tx, resourceType, c.QueryString(), "conditional patch")
		if err == nil && id == "" {
			err = NewOutcome(http.StatusNotFound, NotFound, "no "+resourceType+" matches the conditional patch's criteria")
		}
		return id, err
	})
}

// doPatch applies a JSON Patch to the current version and stores the result, validated like
// any other write. The resource stays locked from read to write, so the patch applies to
// the version it was computed against.
func (a *API) doPatch(c echo.Context, resourceType string, find func(context.Context, pgx.Tx) (string, error)) error {
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	patch, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return NewOutcome(http.StatusBadRequest, Structure, "the body is not a JSON Patch document: "+err.Error())
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	var result UpdateResult
	err = a.store.InTx(ctx, func(tx pgx.Tx) error {
		id, err := find(ctx, tx)
		if err != nil {
			return err
		}
		if result, err = a.store.applyPatch(ctx, tx, resourceType, id, patch, match, a.config.Limits); err != nil {
			return err
		}
		result.Version, err = a.store.settle(ctx, tx, result.Version)
		return err
	})
	if err != nil {
		return err
	}
	return a.respond(c, http.StatusOK, result.Version, preferences(c.Request()), "patched "+result.Version.Path())
}

func (a *API) delete(c echo.Context) error {
	resourceType, id, err := target(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	var v *Version
	if err := a.store.InTx(ctx, func(tx pgx.Tx) error {
		v, err = a.store.Delete(ctx, tx, resourceType, id)
		return err
	}); err != nil {
		return err
	}
	if v != nil {
		c.Response().Header().Set("ETag", v.ETag())
	}
	return c.NoContent(http.StatusNoContent)
}

// conditionalDelete deletes the one resource matching the criteria; several matches are
// refused (412), none is not an error.
func (a *API) conditionalDelete(c echo.Context) error {
	resourceType, _, err := target(c)
	if err != nil {
		return err
	}
	if c.QueryString() == "" {
		return NewOutcome(http.StatusMethodNotAllowed, NotSupported, "DELETE needs a resource id or search criteria; deleting every "+resourceType+" is not supported")
	}
	ctx := c.Request().Context()
	err = a.store.InTx(ctx, func(tx pgx.Tx) error {
		id, err := a.search.MatchOne(ctx, tx, resourceType, c.QueryString(), "conditional delete")
		if err != nil || id == "" {
			return err
		}
		_, err = a.store.Delete(ctx, tx, resourceType, id)
		return err
	})
	if err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func setVersionHeaders(c echo.Context, v *Version) {
	h := c.Response().Header()
	h.Set("ETag", v.ETag())
	h.Set("Last-Modified", v.LastUpdated.UTC().Format(http.TimeFormat))
}

// respond sends a version as the client's Prefer header asks: the resource, nothing, or an
// OperationOutcome saying what happened.
func (a *API) respond(c echo.Context, status int, v *Version, pref preference, message string) error {
	setVersionHeaders(c, v)
	switch pref.Return {
	case "minimal":
		return c.NoContent(status)
	case "OperationOutcome":
		if message == "" {
			message = v.Path() + " is at version " + strconv.Itoa(v.VersionID)
		}
		body, err := MarshalOutcome([]Issue{{Severity: Information, Code: Informational, Diagnostics: message}}, Pretty(c))
		if err != nil {
			return err
		}
		return c.Blob(status, ContentType, body)
	}
	return writeJSON(c, status, v.JSON)
}

// Clone copies a resource, so a retried transaction starts from the body as received. It
// copies the maps and slices and shares the strings, which are immutable: rendering the body
// to JSON and decoding it again cost a 10 MB resource some 75 MB.
func (r *Resource) Clone() *Resource {
	body, _ := cloneValue(r.Body).(map[string]any)
	return &Resource{Type: r.Type, ID: r.ID, Body: body}
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v == nil {
			return v
		}
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = cloneValue(x)
		}
		return out
	case []any:
		if v == nil {
			return v
		}
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = cloneValue(x)
		}
		return out
	}
	return v
}
