// Package examples holds the registry's example patients: one FHIR R4 transaction Bundle per
// patient of DOMAIN.md's public hospital reports, as an EHR following the registry's
// conventions (registry/definitions/README.md) would send them. `cartreg demo` loads them;
// README.md here tells each patient's story.
package examples

import "embed"

// Bundles are the example transaction Bundles, *.json.
//
//go:embed *.json
var Bundles embed.FS
