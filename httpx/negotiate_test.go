package httpx

import "testing"

func TestPreferred(t *testing.T) {
	fhirOffers := []string{"application/fhir+json; fhirVersion=4.0", "application/json", "text/html"}
	listOffers := []string{"application/json", "text/csv", "text/calendar"}
	for _, c := range []struct {
		accept string
		offers []string
		want   string
	}{
		{"", listOffers, "application/json"},
		{"text/csv", listOffers, "text/csv"},
		{"text/csv;q=0.5, application/json", listOffers, "application/json"},
		{"text/csv, application/json", listOffers, "text/csv"}, // a tie: the first listed
		{"application/json, text/csv", listOffers, "application/json"},
		{"text/calendar;q=0.9, text/csv;q=0.8", listOffers, "text/calendar"},
		{"text/calendar;q=0.1, text/csv;q=0.8", listOffers, "text/csv"},
		{"*/*", listOffers, "application/json"},
		{"text/*", listOffers, "text/csv"},
		{"text/*;q=0.2, text/calendar", listOffers, "text/calendar"},
		{"text/csv;q=0, */*", []string{"text/csv", "application/json"}, "application/json"}, // the specific range rules
		{"text/csv;q=0.0", listOffers, ""},
		{"application/xml", listOffers, ""},
		{"*/*;q=0", listOffers, ""},
		{"garbage", listOffers, ""},
		{"TEXT/CSV", listOffers, "text/csv"},
		{"text/csv; charset=latin1", listOffers, "text/csv"}, // a parameter the offer does not name
		{"text/csv;q=abc", listOffers, "text/csv"},           // a bad quality is read as 1
		{"application/fhir+json; fhirVersion=4.0", fhirOffers, fhirOffers[0]},
		{"application/fhir+json; fhirVersion=3.0", fhirOffers, ""},
		{"application/fhir+json; fhirVersion=3.0, application/json;q=0.5", fhirOffers, "application/json"},
		{"application/fhir+json; charset=utf-8", fhirOffers, fhirOffers[0]},
		{"application/xml, application/fhir+json;q=0.1", fhirOffers, fhirOffers[0]},
		{"application/*", fhirOffers, fhirOffers[0]},
		{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", fhirOffers, "text/html"},
		{"*/html", fhirOffers, ""}, // not a media range
	} {
		if got := Preferred(c.accept, c.offers...); got != c.want {
			t.Errorf("Preferred(%q, %q) = %q, want %q", c.accept, c.offers, got, c.want)
		}
	}
	if got := Preferred(""); got != "" {
		t.Errorf("Preferred with no offers = %q", got)
	}
}

func TestFormat(t *testing.T) {
	names := map[string]string{"json": "application/json", "csv": "text/csv"}
	offers := []string{"application/json", "text/csv; charset=utf-8"}
	for value, want := range map[string]string{
		"csv": "text/csv", " CSV ": "text/csv", "json": "application/json",
		"text/csv": "text/csv; charset=utf-8", "Text/CSV; charset=utf-8": "text/csv; charset=utf-8",
		"application/json": "application/json", "xml": "", "application/xml": "", "": "", "text/*": "",
	} {
		if got := Format(value, names, offers...); got != want {
			t.Errorf("Format(%q) = %q, want %q", value, got, want)
		}
	}
}
