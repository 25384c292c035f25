package searchparam

import (
	"strconv"
	"testing"
)

// BenchmarkExtract measures what every write pays: all of a resource's parameters.
func BenchmarkExtract(b *testing.B) {
	r := Default()
	for _, file := range []string{"Patient-example.json", "Observation-example.json"} {
		res := example(b, file)
		rt := res["resourceType"].(string)
		b.Run(rt, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := r.Extract(rt, res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Load(); err != nil {
			b.Fatal(err)
		}
	}
}

// manyIdentifiers is a Patient with n distinct identifiers and n names, half of them
// repeats of the others, the shape that made extraction quadratic.
func manyIdentifiers(n int) map[string]any {
	ids := make([]any, n)
	names := make([]any, n)
	for i := range ids {
		ids[i] = map[string]any{"system": "urn:oid:1.2.3", "value": "id-" + strconv.Itoa(i)}
		names[i] = map[string]any{"family": "Family" + strconv.Itoa(i/2)}
	}
	return map[string]any{"resourceType": "Patient", "id": "p", "identifier": ids, "name": names}
}

// BenchmarkExtractManyValues shows extraction linear in the number of values: the time per
// value (ns/value) stays flat from 1,000 to 100,000 identifiers.
func BenchmarkExtractManyValues(b *testing.B) {
	r := Default()
	for _, n := range []int{1_000, 10_000, 100_000} {
		res := manyIdentifiers(n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := r.Extract("Patient", res); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/value")
		})
	}
}
