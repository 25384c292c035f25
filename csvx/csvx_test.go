package csvx

import (
	"bytes"
	"encoding/csv"
	"reflect"
	"testing"
)

func TestDefuse(t *testing.T) {
	for in, want := range map[string]string{
		"":                           "",
		"Riverside":                  "Riverside",
		`=HYPERLINK("http://x","y")`: `'=HYPERLINK("http://x","y")`,
		"+1+A1":                      "'+1+A1",
		"-2+3+cmd|' /C calc'!A0":     "'-2+3+cmd|' /C calc'!A0",
		"@SUM(A1:A2)":                "'@SUM(A1:A2)",
		"\t=1+1":                     "'\t=1+1",
		"\r=1+1":                     "'\r=1+1",
		"-":                          "'-",
		"-Inf":                       "'-Inf",
		"-0x1p3":                     "'-0x1p3",
		"-1.5":                       "-1.5",
		"+2":                         "+2",
		"-3e-4":                      "-3e-4",
		"-.5":                        "-.5",
		"12":                         "12",
		"2024-01-01":                 "2024-01-01",
		"NA":                         "NA",
		"a=b":                        "a=b",
	} {
		if got := Defuse(in); got != want {
			t.Errorf("Defuse(%q) = %q, want %q", in, got, want)
		}
	}
}

// What a reader gets back is the defused cells, quoted and escaped as RFC 4180 says.
func TestWriterRoundTrips(t *testing.T) {
	var buf bytes.Buffer
	rows := [][]string{{"group", "n"}, {`=HYPERLINK("http://x","y")`, "-1.5"}, {"a,b\n\"c\"", "7"}}
	if err := NewWriter(&buf).WriteAll(rows); err != nil {
		t.Fatal(err)
	}
	got, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"group", "n"}, {`'=HYPERLINK("http://x","y")`, "-1.5"}, {"a,b\n\"c\"", "7"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back %q, want %q", got, want)
	}
}

// A spreadsheet's CSV starts with the UTF-8 byte-order mark, once, before the header; a
// program's has none.
func TestSpreadsheetWriterWritesTheByteOrderMarkFirst(t *testing.T) {
	records := [][]string{{"Site", "Patient"}, {"Universitätsklinikum", "=1+1"}}
	var sheet, plain bytes.Buffer
	if err := NewSpreadsheetWriter(&sheet).WriteAll(records); err != nil {
		t.Fatal(err)
	}
	if err := NewWriter(&plain).WriteAll(records); err != nil {
		t.Fatal(err)
	}
	want := "\uFEFFSite,Patient\nUniversitätsklinikum,'=1+1\n"
	if sheet.String() != want {
		t.Errorf("spreadsheet CSV %q, want %q", sheet.String(), want)
	}
	if plain.String() != want[len(BOM):] {
		t.Errorf("plain CSV %q", plain.String())
	}
}
