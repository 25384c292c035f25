package searchparam

import "testing"

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
