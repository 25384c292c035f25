package fhir

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// The Bundle rules of R4 (bundle.html and the Bundle StructureDefinition) that need more
// than the fhirpath package evaluates; bdl-1, -2 and -5 are among the data-driven invariants.

// Which Bundle types carry entry.request (bdl-3) and entry.response (bdl-4).
var (
	bundleTypesWithRequest  = map[string]bool{"batch": true, "transaction": true, "history": true}
	bundleTypesWithResponse = map[string]bool{"batch-response": true, "transaction-response": true, "history": true}
)

var urnUUID = regexp.MustCompile(`^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func (v *validator) bundle(path string, b map[string]any) {
	typ, _ := b["type"].(string)
	entries, _ := b["entry"].([]any)

	switch typ {
	case "document":
		id, _ := b["identifier"].(map[string]any)
		if id["system"] == nil || id["value"] == nil {
			v.add(Error, Required, path+".identifier", "bdl-9: a document must have an identifier with a system and a value")
		}
		if b["timestamp"] == nil {
			v.add(Error, Required, path+".timestamp", "bdl-10: a document must have a date (timestamp)")
		}
		if entryResourceType(entries, 0) != "Composition" {
			v.add(Error, Invalid, path+".entry[0].resource", "bdl-11: a document must have a Composition as its first resource")
		}
	case "message":
		if entryResourceType(entries, 0) != "MessageHeader" {
			v.add(Error, Invalid, path+".entry[0].resource", "bdl-12: a message must have a MessageHeader as its first resource")
		}
	}

	// Where each fullUrl (or, without one, each Type/id) was first seen, with its version:
	// linear in the entries, whatever a client sends.
	fullURLs := map[[2]string]int{}
	ids := map[[2]string]int{}
	for i, raw := range entries {
		e, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		at := fmt.Sprintf("%s.entry[%d]", path, i)
		if _, has := e["request"]; has != bundleTypesWithRequest[typ] {
			if has {
				v.add(Error, Invalid, at+".request", "bdl-3: entry.request is only for batch, transaction and history Bundles, not %q", typ)
			} else {
				v.add(Error, Required, at, "bdl-3: every entry of a %s Bundle needs a request", typ)
			}
		}
		if _, has := e["response"]; has != bundleTypesWithResponse[typ] {
			if has {
				v.add(Error, Invalid, at+".response", "bdl-4: entry.response is only for batch-response, transaction-response and history Bundles, not %q", typ)
			} else {
				v.add(Error, Required, at, "bdl-4: every entry of a %s Bundle needs a response", typ)
			}
		}

		res, _ := e["resource"].(map[string]any)
		rtype, _ := res["resourceType"].(string)
		rid, _ := res["id"].(string)
		meta, _ := res["meta"].(map[string]any)
		version, _ := meta["versionId"].(string)

		fullURL, _ := e["fullUrl"].(string)
		if fullURL != "" {
			v.fullURL(at+".fullUrl", fullURL, rtype, rid)
			v.unique(fullURLs, [2]string{fullURL, version}, i, at+".fullUrl", typ, "fullUrl")
		}
		if fullURL == "" && rtype != "" && rid != "" {
			// Without a fullUrl, an entry's resource is known by its type and id.
			v.unique(ids, [2]string{rtype + "/" + rid, version}, i, at+".resource.id", typ, "resource")
		}
	}
}

// unique is bdl-7: one fullUrl (and so one resource) per entry, except for other versions of
// it in a history Bundle.
func (v *validator) unique(seen map[[2]string]int, key [2]string, i int, at, bundleType, what string) {
	if bundleType == "history" {
		return
	}
	if j, dup := seen[key]; dup {
		v.add(Error, Duplicate, at, "bdl-7: %s %s is also that of entry %d; a Bundle holds each resource once", what, key[0], j)
		return
	}
	seen[key] = i
}

// fullURL checks an entry's fullUrl: absolute (bdl-7's premise), not version specific (bdl-8)
// and, when it is a RESTful URL, ending with the resource's type and id (a warning).
func (v *validator) fullURL(at, fullURL, rtype, rid string) {
	if strings.HasPrefix(fullURL, "urn:uuid:") {
		if !urnUUID.MatchString(fullURL) {
			v.add(Error, Value, at, "%q is not a valid urn:uuid", truncate(fullURL, 100))
		}
		return
	}
	if strings.HasPrefix(fullURL, "urn:oid:") {
		return
	}
	u, err := url.Parse(fullURL)
	if err != nil || !u.IsAbs() {
		v.add(Error, Value, at, "fullUrl %q must be an absolute URL (or a urn:uuid or urn:oid)", truncate(fullURL, 100))
		return
	}
	if strings.Contains(u.Path, "/_history/") {
		v.add(Error, Value, at, "bdl-8: fullUrl %q must not be version specific", truncate(fullURL, 100))
		return
	}
	if rtype == "" || rid == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return
	}
	segments := strings.Split(strings.TrimSuffix(u.Path, "/"), "/")
	if n := len(segments); n >= 2 && IsResourceType(segments[n-2]) && ValidID(segments[n-1]) {
		if segments[n-2] != rtype || segments[n-1] != rid {
			// A warning, not an error as in the HL7 validator: two of HL7's own R4 examples
			// (Bundle-10bb101f-…, Bundle-lri-example) disagree so, and the examples are
			// accepted.
			v.add(Warning, Invalid, at, "fullUrl %q does not agree with the resource's type and id, %s/%s", truncate(fullURL, 100), rtype, rid)
		}
	}
}

// entryResourceType is the resourceType of entry i's resource, or "".
func entryResourceType(entries []any, i int) string {
	if i >= len(entries) {
		return ""
	}
	e, _ := entries[i].(map[string]any)
	r, _ := e["resource"].(map[string]any)
	t, _ := r["resourceType"].(string)
	return t
}
