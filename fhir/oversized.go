package fhir

// maxIndexedBytes is the most bytes of indexed text an index row may carry into a btree
// lookup index. PostgreSQL refuses btree rows over about 2,700 bytes (a third of a page);
// this leaves room for the row's type, code and overhead. Longer values go to the tables'
// oversized partitions (migration 013).
const maxIndexedBytes = 2000

// Which index rows are oversized: one rule each for the writer, which puts them in their
// table's oversized partition, and for search, which leaves that partition out of a lookup
// that no oversized row can match (see fitsOnly).

func stringOversized(normalized string) bool { return len(normalized) > maxIndexedBytes }

func tokenOversized(system, value string) bool { return len(system)+len(value) > maxIndexedBytes }

func referenceOversized(url string) bool { return len(url) > maxIndexedBytes }

func uriOversized(value string) bool { return len(value) > maxIndexedBytes }

// longestResourceType bounds the type in a local absolute reference whose type a search
// leaves open. R4's longest resource type name has 33 characters
// (MedicinalProductUndesirableEffect); the bound only needs to be safe, not tight.
const longestResourceType = 64

// fitsPartition is each partitioned index table's lookup partition, the rows that are not
// oversized.
var fitsPartition = map[string]string{
	"search_string":    "search_string_fits",
	"search_token":     "search_token_fits",
	"search_reference": "search_reference_fits",
	"search_uri":       "search_uri_fits",
}

// localReferenceOversized tells whether a row that local_reference (migration 005) accepts
// as pointing at typ/id on base could be oversized: such a row's url is empty or
// base + "/" + type + "/" + id. An empty typ stands for any type.
func localReferenceOversized(base, typ, id string) bool {
	typeLen := len(typ)
	if typ == "" {
		typeLen = longestResourceType
	}
	return len(base)+1+typeLen+1+len(id) > maxIndexedBytes
}
