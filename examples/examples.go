// Package examples holds the registry's example patients: one FHIR R4 transaction Bundle per
// patient drawn from public hospital reports, as an EHR following the registry's conventions
// would send them (registry/definitions/README.md, whose "Example patients" section says where
// they come from). `cartreg demo` loads them; README.md here tells each patient's story.
package examples

import "embed"

// Bundles are the example transaction Bundles, *.json.
//
//go:embed *.json
var Bundles embed.FS
