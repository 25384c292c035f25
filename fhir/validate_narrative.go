package fhir

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// The narrative rules of R4 (narrative.html, constraints txt-1 and txt-2): Narrative.div is a
// single XHTML div, in the XHTML namespace, using only basic XHTML — no head or body, no
// scripts, forms, base, link, style or frames, no event attributes — and it has some
// non-whitespace content. Narrative is shown to people by other systems, so active content
// in it would run in their browsers. The element and attribute lists are the ones the HL7
// reference validator checks (its InstanceValidator's checkInnerNames).

const xhtmlNamespace = "http://www.w3.org/1999/xhtml"

var narrativeElements = setOf("p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span",
	"b", "em", "i", "strong", "small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite",
	"blockquote", "hr", "address", "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt",
	"dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th",
	"td", "code", "samp", "img", "map", "area")

// Attributes allowed on any narrative element, and those allowed on some only.
var (
	narrativeAttributes = setOf("title", "style", "class", "id", "lang", "dir", "accesskey",
		"tabindex", "span", "width", "align", "valign", "char", "charoff", "abbr", "axis",
		"headers", "scope", "rowspan", "colspan")
	narrativeElementAttributes = map[string]map[string]bool{
		"a":          setOf("href", "name"),
		"img":        setOf("src", "alt", "height", "width"),
		"area":       setOf("href", "shape", "coords", "alt", "nohref"),
		"map":        setOf("name"),
		"table":      setOf("border", "cellpadding", "cellspacing", "summary", "frame", "rules"),
		"ol":         setOf("start", "type"),
		"ul":         setOf("type"),
		"li":         setOf("value", "type"),
		"q":          setOf("cite"),
		"blockquote": setOf("cite"),
	}
)

// URL schemes that run code or smuggle content where narrative links or images point.
var activeSchemes = []string{"javascript:", "vbscript:", "data:"}

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// narrativeProblem is one thing wrong with a narrative, in a sentence.
type narrativeProblem struct {
	text    string
	warning bool
}

// checkNarrative returns what is wrong with div, a Narrative.div.
func checkNarrative(div string) []narrativeProblem {
	var problems []narrativeProblem
	report := func(format string, args ...any) {
		if len(problems) < 20 { // a page of garbage is not worth a thousand issues
			problems = append(problems, narrativeProblem{text: fmt.Sprintf(format, args...)})
		}
	}
	d := xml.NewDecoder(strings.NewReader(div))
	d.Strict = true
	d.Entity = xml.HTMLEntity
	depth, roots, hasContent := 0, 0, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			report("txt-1: the narrative is not well-formed XHTML: %v", err)
			return problems
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name := t.Name.Local
			if depth == 0 {
				roots++
				if name != "div" || roots > 1 {
					report("txt-1: the narrative must be a single <div> element, not <%s>", name)
				} else if t.Name.Space != xhtmlNamespace {
					report("txt-1: the narrative's <div> must be in the XHTML namespace (xmlns=%q)", xhtmlNamespace)
				}
			} else if !narrativeElements[name] {
				report("txt-1: <%s> is not allowed in narrative, which takes only basic XHTML (no scripts, forms, styles, frames, objects, head or body)", name)
			} else if t.Name.Space != xhtmlNamespace {
				report("txt-1: <%s> is not in the XHTML namespace", name)
			}
			if name == "img" {
				hasContent = true
			}
			for _, a := range t.Attr {
				checkNarrativeAttribute(name, a, report)
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				if depth == 0 {
					report("txt-1: the narrative has text outside its <div>")
				}
				hasContent = true
			}
		case xml.Directive:
			report("txt-1: the narrative must not contain a DOCTYPE or other directive")
		case xml.ProcInst:
			if t.Target != "xml" {
				report("txt-1: the narrative must not contain processing instructions")
			}
		}
	}
	if roots == 0 {
		report("txt-1: the narrative must be a <div> element")
	} else if !hasContent {
		// A warning: three of HL7's own R4 examples have an empty div, and the validator's
		// htmlChecks() in R4 checks element names only.
		problems = append(problems, narrativeProblem{text: "txt-2: the narrative should have some non-whitespace content", warning: true})
	}
	return problems
}

func checkNarrativeAttribute(element string, a xml.Attr, report func(string, ...any)) {
	name := a.Name.Local
	switch {
	case a.Name.Space == "xmlns" || (a.Name.Space == "" && name == "xmlns"):
		return // namespace declarations: what they declare is checked on the elements
	case (a.Name.Space == "xml" || a.Name.Space == "http://www.w3.org/XML/1998/namespace") && name == "lang":
		return
	case strings.HasPrefix(strings.ToLower(name), "on"):
		report("txt-1: the event attribute %s on <%s> is not allowed in narrative", name, element)
		return
	case a.Name.Space != "" || !(narrativeAttributes[name] || narrativeElementAttributes[element][name]):
		report("txt-1: the attribute %s is not allowed on <%s> in narrative", name, element)
		return
	}
	if name == "href" || name == "src" {
		v := strings.ToLower(strings.Join(strings.Fields(a.Value), ""))
		for _, scheme := range activeSchemes {
			if strings.HasPrefix(v, scheme) && !(scheme == "data:" && element == "img") {
				report("txt-1: <%s %s> must not be a %s URL", element, name, strings.TrimSuffix(scheme, ":"))
			}
		}
	}
}
