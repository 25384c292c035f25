// Command gen extracts the search parameter definitions cartreg needs from the FHIR R4
// specification's Bundle of SearchParameter resources (search-parameters.json, published as
// Bundle-searchParams.json in the hl7.fhir.r4.examples 4.0.1 package) into the compact file
// the searchparam package embeds. It keeps, for each SearchParameter, the fields the
// registry reads, sorted by URL, one parameter per line so that a regeneration diffs well.
//
//	go run ./gen -in ../../../shared/fhir-r4/search-parameters.json -out r4-search-parameters.json
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
)

// definition mirrors the embedded file's record (searchparam.spec reads it back).
type definition struct {
	URL         string   `json:"url"`
	Code        string   `json:"code"`
	Base        []string `json:"base"`
	Type        string   `json:"type"`
	Expression  string   `json:"expression,omitempty"`
	Target      []string `json:"target,omitempty"`
	Description string   `json:"description,omitempty"`
}

func main() {
	in := flag.String("in", "", "the specification's Bundle of SearchParameters (JSON)")
	out := flag.String("out", "", "the file to write")
	flag.Parse()
	if *in == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var bundle struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				definition
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if bundle.ResourceType != "Bundle" {
		return fmt.Errorf("%s: a %s, not a Bundle", in, bundle.ResourceType)
	}
	var defs []definition
	seen := map[string]bool{}
	for i, e := range bundle.Entry {
		r := e.Resource
		if r.ResourceType != "SearchParameter" {
			return fmt.Errorf("%s: entry %d is a %s, not a SearchParameter", in, i, r.ResourceType)
		}
		if r.URL == "" || r.Code == "" || r.Type == "" || len(r.Base) == 0 {
			return fmt.Errorf("%s: entry %d (%s) lacks url, code, type or base", in, i, r.URL)
		}
		if seen[r.URL] {
			return fmt.Errorf("%s: %s is defined twice", in, r.URL)
		}
		seen[r.URL] = true
		defs = append(defs, r.definition)
	}
	sort.Slice(defs, func(i, j int) bool { return defs[i].URL < defs[j].URL })

	var buf bytes.Buffer
	buf.WriteString("[\n")
	for i, d := range defs {
		line, err := marshal(d)
		if err != nil {
			return err
		}
		buf.Write(line)
		if i < len(defs)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("]\n")
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// marshal encodes without HTML escaping, so that "<" and "&" in descriptions stay legible.
func marshal(d definition) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
