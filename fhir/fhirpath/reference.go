package fhirpath

import "strings"

// SplitReference finds the target of a literal reference: "Patient/123",
// "Patient/123/_history/2" or an absolute URL ending in one of those
// ("https://example.org/fhir/Patient/123") give ("Patient", "123"). Anything else
// ("#contained", "urn:uuid:...", a conditional "Patient?identifier=...", an unknown type or
// a malformed id) gives empty strings.
func SplitReference(ref string) (resourceType, id string) {
	if strings.ContainsAny(ref, "?#") {
		return "", ""
	}
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndexByte(ref, '/')
	if slash <= 0 {
		return "", ""
	}
	id = ref[slash+1:]
	typ := ref[strings.LastIndexByte(ref[:slash], '/')+1 : slash]
	if !IsResourceType(typ) || !ValidID(id) {
		return "", ""
	}
	return typ, id
}

// ValidID tells whether s is a valid FHIR id: 1 to 64 of A-Z a-z 0-9 - and '.', but not
// "." or "..". It is fhir.ValidID, here because fhir imports this package and not the other
// way round.
func ValidID(s string) bool {
	// "." and ".." match R4's pattern, but in a URL they are path segments that clients and
	// proxies remove: Patient/.. would be the base itself.
	if len(s) == 0 || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
