// Package httpx holds the HTTP helpers every endpoint package shares. It imports none of
// them, so fhir, registry and followup can all use it.
package httpx

import (
	"mime"
	"strconv"
	"strings"
)

// Choosing among a few offered types takes about sixty lines; written here rather than taken
// from a library because the endpoints need two things the small ones (goautoneg,
// contenttype) do differently: a tie between equally wanted offers goes to the type the
// client listed first (the work list has answered "text/csv, application/json" with CSV all
// along), and a parameter such as charset only counts when the offer names it too.

// acceptRange is one element of an Accept header.
type acceptRange struct {
	typ, subtype string
	params       map[string]string // without q
	q            float64
	pos          int // its place in the header
}

func parseAccept(accept string) []acceptRange {
	var out []acceptRange
	for i, part := range strings.Split(accept, ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		typ, subtype, ok := strings.Cut(mediaType, "/")
		if !ok || typ == "*" && subtype != "*" {
			continue
		}
		r := acceptRange{typ: typ, subtype: subtype, params: params, q: 1, pos: i}
		if s, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && f >= 0 && f <= 1 {
				r.q = f
			}
			delete(params, "q")
		}
		out = append(out, r)
	}
	return out
}

// match tells how specifically r names offer (type, subtype and its parameters): 0 when it
// does not, else 1 for */*, 2 for type/*, 3 and more for the type itself, one more for each
// parameter both name. A parameter of the range that the offer does not name is ignored
// (charset: any will do); one both name must have the same value (fhirVersion=3.0 is not an
// R4 offer).
func (r acceptRange) match(typ, subtype string, params map[string]string) int {
	switch {
	case r.typ == "*":
		return 1
	case r.typ != typ:
		return 0
	case r.subtype == "*":
		return 2
	case r.subtype != subtype:
		return 0
	}
	n := 3
	for k, v := range r.params {
		if ov, ok := params[k]; ok {
			if !strings.EqualFold(ov, v) {
				return 0
			}
			n++
		}
	}
	return n
}

// Preferred returns the offer (a media type, with parameters if it has any) that the Accept
// header wants most: each offer takes the quality of the most specific range that names it
// (so "text/csv;q=0, */*" refuses CSV and takes anything else), q=0 refuses, and a tie goes
// to the offer whose range comes first in the header, then to the earlier offer. An empty
// header accepts anything: the first offer. It returns "" when the header accepts none.
func Preferred(accept string, offers ...string) string {
	if strings.TrimSpace(accept) == "" {
		if len(offers) == 0 {
			return ""
		}
		return offers[0]
	}
	ranges := parseAccept(accept)
	best, bestQ, bestPos := "", 0.0, 0
	for _, offer := range offers {
		mediaType, params, err := mime.ParseMediaType(offer)
		if err != nil {
			continue
		}
		typ, subtype, _ := strings.Cut(mediaType, "/")
		specific, q, pos := 0, 0.0, 0
		for _, r := range ranges {
			if n := r.match(typ, subtype, params); n > specific {
				specific, q, pos = n, r.q, r.pos
			}
		}
		if specific == 0 || q <= 0 {
			continue
		}
		if best == "" || q > bestQ || q == bestQ && pos < bestPos {
			best, bestQ, bestPos = offer, q, pos
		}
	}
	return best
}

// Format reads a _format parameter, which overrides Accept where an endpoint takes one: a
// short name from names ("csv"), or one of the offers' media types (parameters ignored on
// either side), case-insensitively. It returns the offer named, else "".
func Format(value string, names map[string]string, offers ...string) string {
	value = strings.ToLower(strings.TrimSpace(value))
	if offer, ok := names[value]; ok {
		return offer
	}
	if mediaType, _, err := mime.ParseMediaType(value); err == nil {
		value = mediaType
	}
	for _, offer := range offers {
		if mediaType, _, err := mime.ParseMediaType(offer); err == nil && mediaType == value {
			return offer
		}
	}
	return ""
}
