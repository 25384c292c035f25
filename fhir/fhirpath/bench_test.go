package fhirpath

import "testing"

// BenchmarkEvaluate runs expressions of the kinds search parameters use on a Patient.
func BenchmarkEvaluate(b *testing.B) {
	patient := mustDecode(b, patientJSON)
	for _, src := range []string{
		"Patient.name",
		"Patient.name.given | Practitioner.name.given",
		"Patient.telecom.where(system='email')",
		"Patient.deceased.exists() and Patient.deceased != false",
		"Patient.generalPractitioner.where(resolve() is Practitioner)",
		"(Observation.value as Quantity) | (Observation.value as SampledData)",
	} {
		e := MustCompile(src).ForResourceType("Patient")
		b.Run(src, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := e.Evaluate(patient); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		MustCompile("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | (Observation.value as Quantity) | Patient.telecom.where(system='email')")
	}
}
