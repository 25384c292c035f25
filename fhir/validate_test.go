package fhir_test

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/fhir"
)

const xhtmlNS = `xmlns=\"http://www.w3.org/1999/xhtml\"`

func narrative(div string) string {
	return `{"resourceType":"Patient","text":{"status":"generated","div":"` + div + `"}}`
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func sha1b64(s string) string {
	sum := sha1.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

const longID = "a123456789b123456789c123456789d123456789e123456789f123456789g1234" // 65 characters

// wantIssue is an issue a body must get: an error at where, whose diagnostics contain says.
type wantIssue struct{ where, says string }

// Each class of input that the HL7 validator refuses and google/fhir accepted: every one is
// now a 400 whose issues locate the problem.
func TestValidationRefusesWhatTheHL7ValidatorRefuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		body string
		want []wantIssue
	}{
		// Narrative (txt-1).
		{"script", narrative(`<div ` + xhtmlNS + `><p>hi</p><script>alert(1)</script></div>`), []wantIssue{{"Patient.text.div", "<script> is not allowed"}}},
		{"event attribute", narrative(`<div ` + xhtmlNS + `><p onclick=\"steal()\">hi</p></div>`), []wantIssue{{"Patient.text.div", "event attribute onclick"}}},
		{"javascript URL", narrative(`<div ` + xhtmlNS + `><a href=\" JavaScript:alert(1)\">hi</a></div>`), []wantIssue{{"Patient.text.div", "javascript URL"}}},
		{"data URL link", narrative(`<div ` + xhtmlNS + `><a href=\"data:text/html;base64,PHNjcmlwdD4=\">hi</a></div>`), []wantIssue{{"Patient.text.div", "data URL"}}},
		{"form", narrative(`<div ` + xhtmlNS + `><form action=\"x\"><input/></form>hi</div>`), []wantIssue{{"Patient.text.div", "<form> is not allowed"}, {"Patient.text.div", "<input> is not allowed"}}},
		{"style element", narrative(`<div ` + xhtmlNS + `><style>p{}</style>hi</div>`), []wantIssue{{"Patient.text.div", "<style> is not allowed"}}},
		{"iframe", narrative(`<div ` + xhtmlNS + `><iframe src=\"http://x\"></iframe>hi</div>`), []wantIssue{{"Patient.text.div", "<iframe> is not allowed"}}},
		{"unknown attribute", narrative(`<div ` + xhtmlNS + `><p formaction=\"x\">hi</p></div>`), []wantIssue{{"Patient.text.div", "attribute formaction is not allowed"}}},
		{"no namespace", narrative(`<div>hi</div>`), []wantIssue{{"Patient.text.div", "XHTML namespace"}}},
		{"not a div", narrative(`<p ` + xhtmlNS + `>hi</p>`), []wantIssue{{"Patient.text.div", "single <div>"}}},
		{"not well-formed", narrative(`<div ` + xhtmlNS + `><p>hi</div>`), []wantIssue{{"Patient.text.div", "not well-formed"}}},
		{"contained narrative", `{"resourceType":"Patient","managingOrganization":{"reference":"#o"},"contained":[{"resourceType":"Organization","id":"o","name":"x","text":{"status":"generated","div":"<div ` + xhtmlNS + `><script>x</script>x</div>"}}]}`,
			[]wantIssue{{"Patient.contained[0].text.div", "<script> is not allowed"}}},

		// ele-1: empty arrays, objects and strings, null.
		{"empty array", `{"resourceType":"Patient","name":[]}`, []wantIssue{{"Patient.name", "empty array"}}},
		{"empty object", `{"resourceType":"Patient","name":[{}]}`, []wantIssue{{"Patient.name[0]", "{}"}}},
		{"empty meta", `{"resourceType":"Patient","meta":{}}`, []wantIssue{{"Patient.meta", "{}"}}},
		{"null", `{"resourceType":"Patient","meta":null}`, []wantIssue{{"Patient.meta", "null"}}},
		{"null array item", `{"resourceType":"Patient","name":[{"given":["Ann",null]}]}`, []wantIssue{{"Patient.name[0].given[1]", "null"}}},
		{"empty primitive extension", `{"resourceType":"Patient","_birthDate":{}}`, []wantIssue{{"Patient.birthDate", "{}"}}},
		{"empty string", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":""}`, []wantIssue{{"Observation.valueString", "empty string"}}},
		{"only an id", `{"resourceType":"Patient","maritalStatus":{"id":"m"}}`, []wantIssue{{"Patient.maritalStatus", "only an id"}}},

		// Numbers.
		{"integer -0", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":-0}`, []wantIssue{{"Observation.valueInteger", "not a valid integer"}}},

		// Ids.
		{"contained id of 65", `{"resourceType":"Patient","managingOrganization":{"reference":"#` + longID + `"},"contained":[{"resourceType":"Organization","id":"` + longID + `","name":"x"}]}`,
			[]wantIssue{{"Patient.contained[0].id", "not a valid id"}}},
		{"contained id with _", `{"resourceType":"Patient","managingOrganization":{"reference":"#a_b"},"contained":[{"resourceType":"Organization","id":"a_b","name":"x"}]}`,
			[]wantIssue{{"Patient.contained[0].id", "not a valid id"}}},

		// Attachment.
		{"data without contentType", `{"resourceType":"Patient","photo":[{"data":"` + b64("hello") + `"}]}`, []wantIssue{{"Patient.photo[0]", "att-1"}}},
		{"size", `{"resourceType":"Patient","photo":[{"contentType":"text/plain","data":"` + b64("hello") + `","size":3}]}`, []wantIssue{{"Patient.photo[0].size", "size is 3 but data holds 5 bytes"}}},
		{"hash", `{"resourceType":"Patient","photo":[{"contentType":"text/plain","data":"` + b64("hello") + `","hash":"` + sha1b64("other") + `"}]}`, []wantIssue{{"Patient.photo[0].hash", "not the SHA-1 of data"}}},

		// Bundles.
		{"duplicate fullUrl", `{"resourceType":"Bundle","type":"collection","entry":[
			{"fullUrl":"http://a.example/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1"}},
			{"fullUrl":"http://a.example/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1"}}]}`, []wantIssue{{"Bundle.entry[1].fullUrl", "bdl-7"}}},
		{"duplicate id", `{"resourceType":"Bundle","type":"collection","entry":[
			{"resource":{"resourceType":"Patient","id":"1"}},{"resource":{"resourceType":"Patient","id":"1"}}]}`, []wantIssue{{"Bundle.entry[1].resource.id", "bdl-7"}}},
		{"request in a collection", `{"resourceType":"Bundle","type":"collection","entry":[
			{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`, []wantIssue{{"Bundle.entry[0].request", "bdl-3"}}},
		{"transaction without request", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"}}]}`, []wantIssue{{"Bundle.entry[0]", "bdl-3"}}},
		{"response in a searchset", `{"resourceType":"Bundle","type":"searchset","entry":[
			{"resource":{"resourceType":"Patient"},"response":{"status":"200"}}]}`, []wantIssue{{"Bundle.entry[0].response", "bdl-4"}}},
		{"version-specific fullUrl", `{"resourceType":"Bundle","type":"collection","entry":[
			{"fullUrl":"http://a.example/fhir/Patient/1/_history/2","resource":{"resourceType":"Patient","id":"1"}}]}`, []wantIssue{{"Bundle.entry[0].fullUrl", "bdl-8"}}},
		{"relative fullUrl", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"Patient/1","resource":{"resourceType":"Patient","id":"1"}}]}`,
			[]wantIssue{{"Bundle.entry[0].fullUrl", "absolute URL"}}},
		{"bad urn:uuid", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:not-a-uuid","resource":{"resourceType":"Patient"}}]}`,
			[]wantIssue{{"Bundle.entry[0].fullUrl", "urn:uuid"}}},
		{"document rules", `{"resourceType":"Bundle","type":"document","entry":[{"fullUrl":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0","resource":{"resourceType":"Patient"}}]}`,
			[]wantIssue{{"Bundle.identifier", "bdl-9"}, {"Bundle.timestamp", "bdl-10"}, {"Bundle.entry[0].resource", "bdl-11"}}},
		{"message without MessageHeader", `{"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0","resource":{"resourceType":"Patient"}}]}`,
			[]wantIssue{{"Bundle.entry[0].resource", "bdl-12"}}},
		{"total outside a searchset", `{"resourceType":"Bundle","type":"collection","total":1}`, []wantIssue{{"Bundle", "bdl-1"}}},
		{"entry with nothing", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}]}`, []wantIssue{{"Bundle.entry[0]", "bdl-5"}}},
		{"fullUrl against id, with another error", `{"resourceType":"Bundle","type":"collection","entry":[
			{"fullUrl":"http://a.example/fhir/Patient/1","resource":{"resourceType":"Patient","id":"2","name":[]}}]}`,
			[]wantIssue{{"Bundle.entry[0].fullUrl", "does not agree"}, {"Bundle.entry[0].resource.name", "empty array"}}},

		// Resource invariants from the StructureDefinitions.
		{"dom-3 unreferenced contained", `{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o","name":"x"}]}`, []wantIssue{{"Patient.contained[0]", "dom-3"}}},
		{"dom-4 contained versionId", `{"resourceType":"Patient","managingOrganization":{"reference":"#o"},"contained":[{"resourceType":"Organization","id":"o","name":"x","meta":{"versionId":"1"}}]}`,
			[]wantIssue{{"Patient", "dom-4"}}},
		{"dom-5 contained security", `{"resourceType":"Patient","managingOrganization":{"reference":"#o"},"contained":[{"resourceType":"Organization","id":"o","name":"x","meta":{"security":[{"code":"R"}]}}]}`,
			[]wantIssue{{"Patient", "dom-5"}}},
		{"pat-1", `{"resourceType":"Patient","contact":[{"gender":"female"}]}`, []wantIssue{{"Patient.contact[0]", "pat-1"}}},
		{"ext-1 both", `{"resourceType":"Patient","extension":[{"url":"http://x.example/e","valueString":"a","extension":[{"url":"b","valueString":"b"}]}]}`, []wantIssue{{"Patient.extension[0]", "ext-1"}}},
		{"ext-1 neither", `{"resourceType":"Patient","extension":[{"url":"http://x.example/e"}]}`, []wantIssue{{"Patient.extension[0]", "ext-1"}}},
		{"con-4", `{"resourceType":"Condition","subject":{"reference":"Patient/1"},"abatementDateTime":"2020-01-01",
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]}}`, []wantIssue{{"Condition", "con-4"}}},
		{"obs-6", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"a","dataAbsentReason":{"text":"unknown"}}`, []wantIssue{{"Observation", "obs-6"}}},
		{"obs-3", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"referenceRange":[{"type":{"text":"normal"}}]}`, []wantIssue{{"Observation.referenceRange[0]", "obs-3"}}},
		{"qty-3", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1,"code":"kg"}}`, []wantIssue{{"Observation.valueQuantity", "qty-3"}}},
		{"cpt-2", `{"resourceType":"Patient","telecom":[{"value":"555-1234"}]}`, []wantIssue{{"Patient.telecom[0]", "cpt-2"}}},
		{"tim-1 in a datatype's element", `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"},"medicationCodeableConcept":{"text":"x"},
			"dosageInstruction":[{"timing":{"repeat":{"duration":5}}}]}`, []wantIssue{{"MedicationRequest.dosageInstruction[0].timing.repeat", "tim-1"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := fhir.Parse([]byte(c.body))
			var o *fhir.Outcome
			if !errors.As(err, &o) || o.Status != http.StatusBadRequest {
				t.Fatalf("Parse = %v, want a 400 Outcome", err)
			}
			for _, w := range c.want {
				if !hasIssue(o.Issues, w) {
					t.Errorf("no issue at %s saying %q in %v", w.where, w.says, o)
				}
			}
		})
	}
}

func hasIssue(issues []fhir.Issue, w wantIssue) bool {
	for _, is := range issues {
		if len(is.Expression) == 1 && is.Expression[0] == w.where && strings.Contains(is.Diagnostics, w.says) {
			return true
		}
	}
	return false
}

// What the rules must not refuse: the valid neighbours of the cases above.
func TestValidationAcceptsValidNeighbours(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"narrative": narrative(`<div ` + xhtmlNS + `><h1 class=\"t\">Ann&nbsp;Lee</h1><table border=\"1\"><tr><td colspan=\"2\" style=\"color:red\">x</td></tr></table>` +
			`<a href=\"http://example.org/x\">link</a><img src=\"data:image/png;base64,AAAA\" alt=\"i\"/><p xml:lang=\"en\" lang=\"en\">y</p></div>`),
		"null paired with an extension":        `{"resourceType":"Patient","name":[{"given":["Ann",null],"_given":[null,{"extension":[{"url":"http://x.example/e","valueString":"x"}]}]}]}`,
		"primitive extension with id":          `{"resourceType":"Patient","birthDate":"2000-01-01","_birthDate":{"id":"b"}}`,
		"id of 64":                             `{"resourceType":"Patient","managingOrganization":{"reference":"#` + longID[:64] + `"},"contained":[{"resourceType":"Organization","id":"` + longID[:64] + `","name":"x"}]}`,
		"contained referring to its container": `{"resourceType":"Patient","contained":[{"resourceType":"Provenance","id":"p","target":[{"reference":"#"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"display":"x"}}]}]}`,
		"attachment":                           `{"resourceType":"Patient","photo":[{"contentType":"text/plain","data":"` + b64("hello") + `","size":5,"hash":"` + sha1b64("hello") + `"}]}`,
		"decimals":                             `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50E+2,"system":"http://unitsofmeasure.org","code":"kg"}}`,
		"long decimal (a warning only)":        `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":12345678901234567890.5}}`,
		"empty narrative (a warning only)":     narrative(`<div ` + xhtmlNS + `> </div>`),
		"transaction": `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
			{"fullUrl":"http://a.example/fhir/Patient/7","resource":{"resourceType":"Patient","id":"7"},"request":{"method":"PUT","url":"Patient/7"}}]}`,
		"history with versions": `{"resourceType":"Bundle","type":"history","entry":[
			{"fullUrl":"http://a.example/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1","meta":{"versionId":"2"}},"request":{"method":"PUT","url":"Patient/1"},"response":{"status":"200"}},
			{"fullUrl":"http://a.example/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1","meta":{"versionId":"1"}},"request":{"method":"POST","url":"Patient"},"response":{"status":"201"}}]}`,
		"resolved condition": `{"resourceType":"Condition","subject":{"reference":"Patient/1"},"abatementDateTime":"2020-01-01",
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"remission"}]}}`,
	} {
		if _, err := fhir.Parse([]byte(body)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// All of a body's problems come back in one answer, in a stable order.
func TestValidationReportsEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	body := `{"resourceType":"Patient","name":[],"telecom":[{}],"text":{"status":"generated","div":"<div ` + xhtmlNS + `><script>x</script>y</div>"},"gender":"nope"}`
	var first string
	for i := 0; i < 5; i++ {
		_, err := fhir.Parse([]byte(body))
		var o *fhir.Outcome
		if !errors.As(err, &o) {
			t.Fatalf("Parse = %v", err)
		}
		if i == 0 {
			first = o.Error()
			for _, w := range []wantIssue{{"Patient.name", "empty array"}, {"Patient.telecom[0]", "{}"}, {"Patient.text.div", "<script>"}, {"Patient.gender", ""}} {
				if !hasIssue(o.Issues, w) {
					t.Errorf("no issue at %s in %v", w.where, o)
				}
			}
		} else if o.Error() != first {
			t.Fatalf("issues in another order:\n%s\n%s", o.Error(), first)
		}
	}
}

func TestInvariantsAreLoaded(t *testing.T) {
	t.Parallel()
	by := fhir.Invariants()
	n := 0
	for _, keys := range by {
		n += len(keys)
	}
	if n < 90 || len(by["DomainResource"]) != 3 || len(by["Patient.contact"]) != 1 {
		t.Errorf("%d invariants loaded; DomainResource %v, Patient.contact %v", n, by["DomainResource"], by["Patient.contact"])
	}
}

// Through the API: the issues reach the client as a located OperationOutcome and nothing is
// written; in a transaction, located at the entry.
func TestValidationThroughTheAPI(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	versions := s.countRows("resource_version")
	r := s.expect(s.do("POST", "/Patient", narrative(`<div `+xhtmlNS+`><img src=\"x\" onerror=\"steal()\"/></div>`)), http.StatusBadRequest)
	_, diagnostics, expression := outcomeIssue(t, r)
	if len(expression) != 1 || expression[0] != "Patient.text.div" || !strings.Contains(diagnostics, "onerror") {
		t.Errorf("issue %v %q", expression, diagnostics)
	}
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
		{"fullUrl":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0","resource":{"resourceType":"Patient","name":[{"family":"A"}]},"request":{"method":"POST","url":"Patient"}},
		{"resource":{"resourceType":"Patient","name":[{}]},"request":{"method":"POST","url":"Patient"}}]}`
	r = s.expect(s.do("POST", "", bundle), http.StatusBadRequest)
	if !strings.Contains(string(r.body), "Bundle.entry[1].resource.name[0]") {
		t.Errorf("the entry's issue is not located in the Bundle: %s", r.body)
	}
	if s.countRows("resource_version") != versions {
		t.Error("a refused write wrote something")
	}
}
