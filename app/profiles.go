package app

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"

	"github.com/cartreg/cartreg/registry"
)

// publishedProfiles are the registry's resource profiles, by the resource type each
// constrains, for the CapabilityStatement's supportedProfile: the StructureDefinitions the
// server publishes at start-up that constrain a resource (its extensions are not profiles of
// a resource type, so they are left out).
func publishedProfiles() (map[string][]string, error) {
	files, err := fs.Glob(registry.Definitions, "definitions/StructureDefinition-*.json")
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, f := range files {
		raw, err := registry.Definitions.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var sd struct {
			URL, Type, Kind, Derivation string
		}
		if err := json.Unmarshal(raw, &sd); err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		if sd.Kind == "resource" && sd.Derivation == "constraint" && sd.URL != "" {
			out[sd.Type] = append(out[sd.Type], sd.URL)
		}
	}
	for _, urls := range out {
		sort.Strings(urls)
	}
	return out, nil
}
