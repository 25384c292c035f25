package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// ResourceLimits bound what one resource may cost the server, whatever the size of the body
// that carried it: a 2 KB JSON Patch can otherwise copy an element into itself until the
// resource is gigabytes, and an array of a million identifiers costs far more to validate
// and index than its bytes suggest. Zero fields take the defaults below.
type ResourceLimits struct {
	// MaxPatchOperations is the most operations one JSON Patch may have.
	MaxPatchOperations int
	// MaxPatchedSize is the largest resource, in bytes of JSON, a JSON Patch may produce;
	// the bytes its copy operations add are counted as they are applied, so a patch that
	// would grow past it stops there.
	MaxPatchedSize int64
	// MaxArrayLength is the most items any one array of a resource may hold.
	MaxArrayLength int
}

// The limits when none are configured.
const (
	DefaultMaxPatchOperations       = 100
	DefaultMaxPatchedSize     int64 = 4 << 20
	DefaultMaxArrayLength           = 10_000
)

// WithDefaults fills the zero fields with the defaults.
func (l ResourceLimits) WithDefaults() ResourceLimits {
	if l.MaxPatchOperations <= 0 {
		l.MaxPatchOperations = DefaultMaxPatchOperations
	}
	if l.MaxPatchedSize <= 0 {
		l.MaxPatchedSize = DefaultMaxPatchedSize
	}
	if l.MaxArrayLength <= 0 {
		l.MaxArrayLength = DefaultMaxArrayLength
	}
	return l
}

// applyPatch applies patch to doc within the limits: the operation count is checked first,
// and the bytes copy operations add are counted as each is applied (the library stops at
// the limit), so memory stays within a small multiple of MaxPatchedSize however the patch
// is built. Adds cannot amplify: their values are in the patch, bounded by the body size.
func (l ResourceLimits) applyPatch(patch jsonpatch.Patch, doc []byte, path string) ([]byte, error) {
	l = l.WithDefaults()
	if len(patch) > l.MaxPatchOperations {
		return nil, NewOutcome(http.StatusUnprocessableEntity, TooCostly, fmt.Sprintf(
			"the JSON Patch has %d operations; the limit (max-patch-operations) is %d", len(patch), l.MaxPatchOperations))
	}
	opts := jsonpatch.NewApplyOptions()
	opts.AccumulatedCopySizeLimit = l.MaxPatchedSize
	patched, err := patch.ApplyWithOptions(doc, opts)
	var tooBig *jsonpatch.AccumulatedCopySizeError
	if errors.As(err, &tooBig) || (err == nil && int64(len(patched)) > l.MaxPatchedSize) {
		return nil, l.patchedTooLarge(path)
	}
	if err != nil {
		return nil, NewOutcome(http.StatusUnprocessableEntity, Processing, "the patch does not apply to "+path+": "+err.Error())
	}
	return patched, nil
}

func (l ResourceLimits) patchedTooLarge(path string) *Outcome {
	return NewOutcome(http.StatusRequestEntityTooLarge, TooCostly, fmt.Sprintf(
		"the JSON Patch would make %s larger than the limit (max-patched-size) of %d bytes", path, l.MaxPatchedSize))
}

// checkArrays refuses a JSON body with an array of more than MaxArrayLength items, before
// anything decodes it: a 413 located at the first such array by FHIRPath
// (Patient.identifier, Bundle.entry[3].resource.name). exempt names an array, by its path
// below the root (".entry"), that another limit governs. It reads the bytes once without
// allocating per value, and leaves malformed JSON to the parser to report.
func (l ResourceLimits) checkArrays(body []byte, exempt string) error {
	limit := l.WithDefaults().MaxArrayLength
	type frame struct {
		array     bool
		count     int
		key       string
		expectKey bool
	}
	stack := make([]frame, 0, 16)
	var rootType, where string
	found := false
	value := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		if !top.array {
			return
		}
		top.count++
		if top.count == limit+1 && !found {
			var b strings.Builder
			for _, f := range stack[:len(stack)-1] {
				if f.array {
					b.WriteString("[" + strconv.Itoa(f.count-1) + "]")
				} else {
					b.WriteString("." + f.key)
				}
			}
			if b.String() != exempt {
				where, found = b.String(), true
			}
		}
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case ' ', '\t', '\n', '\r', ':':
		case ',':
			if n := len(stack); n > 0 && !stack[n-1].array {
				stack[n-1].expectKey = true
			}
		case '{':
			value()
			stack = append(stack, frame{expectKey: true})
		case '[':
			value()
			stack = append(stack, frame{array: true})
		case '}', ']':
			if len(stack) == 0 {
				return nil
			}
			stack = stack[:len(stack)-1]
		case '"':
			j, escaped := i+1, false
			for ; j < len(body) && body[j] != '"'; j++ {
				if body[j] == '\\' {
					j++
					escaped = true
				}
			}
			if j >= len(body) {
				return nil
			}
			raw := body[i+1 : j]
			i = j
			if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].expectKey {
				key := string(raw)
				if escaped {
					_ = json.Unmarshal(body[i-len(raw)-1:i+1], &key)
				}
				stack[n-1].key, stack[n-1].expectKey = key, false
				continue
			}
			if len(stack) == 1 && stack[0].key == "resourceType" && rootType == "" {
				rootType = string(raw)
			}
			value()
		default:
			// A number, true, false or null: one value, up to the next delimiter.
			value()
			for i+1 < len(body) && !strings.ContainsRune(" \t\n\r,]}:", rune(body[i+1])) {
				i++
			}
		}
	}
	if !found {
		return nil
	}
	if rootType == "" {
		rootType = "Resource"
	}
	return NewOutcome(http.StatusRequestEntityTooLarge, TooCostly, fmt.Sprintf(
		"an array has more than the limit (max-array-length) of %d items", limit), rootType+where)
}
