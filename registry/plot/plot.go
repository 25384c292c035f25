// Package plot draws the registry's outcome figures — Kaplan-Meier survival
// curves with a numbers-at-risk table, and response categories over the
// follow-up timepoints — as self-contained SVG that a researcher can drop onto
// a slide or into a manuscript.
//
// The package only draws: the estimates (survival, confidence limits, numbers
// at risk, category counts, small-cell suppression) are computed by the
// caller. Output is deterministic for a given input, so it can be compared
// byte for byte against golden files.
//
// Drawing goes through github.com/ajstarks/svgo. Its text and title helpers
// XML-escape their content, but it writes attribute values verbatim, so this
// package never puts caller-supplied strings (labels, titles) into an
// attribute: they only ever appear as element text.
package plot

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"

	svg "github.com/ajstarks/svgo/float"
)

// fontFamily ends in the generic sans-serif so every renderer has a match;
// the named faces come first because they have the metrics textWidth assumes.
const fontFamily = "Helvetica, Arial, Liberation Sans, DejaVu Sans, sans-serif"

// Colours shared by both charts. Greys rather than black for axes and grid so
// the data carries the visual weight.
const (
	colText     = "#222222"
	colSubtle   = "#555555"
	colAxis     = "#444444"
	colGrid     = "#e6e6e6"
	colNoData   = "#888888"
	colBackdrop = "#ffffff"
)

// canvas wraps the svgo writer with the few conventions both charts share.
type canvas struct {
	*svg.SVG
	buf bytes.Buffer
}

// newCanvas starts a document of the given size. The drawing is rendered into
// memory first because svgo discards write errors; WriteSVG then reports the
// one error that matters (from the caller's writer) and never leaves a
// half-written document behind on a render problem.
func newCanvas(width, height float64, title, desc string) *canvas {
	c := &canvas{}
	c.SVG = svg.New(&c.buf)
	c.Decimals = 1
	c.Start(width, height,
		fmt.Sprintf(`viewBox="0 0 %s %s"`, num(width), num(height)),
		`font-family="`+fontFamily+`"`,
		`role="img"`)
	// The <title> and <desc> children give the figure an accessible name and
	// are what screen readers and many viewers show; svgo escapes them.
	if title != "" {
		c.Title(title)
	}
	if desc != "" {
		c.Desc(desc)
	}
	c.Rect(0, 0, width, height, `fill="`+colBackdrop+`"`)
	return c
}

// finish closes the document and copies it to w.
func (c *canvas) finish(w io.Writer) error {
	c.End()
	_, err := w.Write(c.buf.Bytes())
	return err
}

// headingTop is where the title block starts.
const headingTop = 14.0

// headingHeight mirrors heading's arithmetic so that a layout can be
// computed before anything is drawn.
func headingHeight(title, subtitle string, top float64) float64 {
	y := top
	if title != "" {
		y += 28
	}
	if subtitle != "" {
		y += 22
	}
	return y
}

// heading draws the title and subtitle from the top-left corner and returns
// the y coordinate below them.
func (c *canvas) heading(x, y float64, title, subtitle string) float64 {
	if title != "" {
		y += 22
		c.Text(x, y, title, attr("font-size", "20"), attr("font-weight", "bold"), attr("fill", colText))
		y += 6
	}
	if subtitle != "" {
		y += 16
		c.Text(x, y, subtitle, attr("font-size", "14"), attr("fill", colSubtle))
		y += 6
	}
	return y
}

// noData centres a grey "No data" note in a rectangle; empty inputs are a
// normal state for a young registry and should render, not fail.
func (c *canvas) noData(left, top, right, bottom float64) {
	c.Text((left+right)/2, (top+bottom)/2, "No data",
		attr("font-size", "16"), attr("fill", colNoData), attr("text-anchor", "middle"))
}

// attr formats one attribute for svgo's variadic style arguments: svgo
// copies any argument containing "=" into the tag as-is. Only constant names
// and package-generated values go through here, never caller text.
func attr(name, value string) string {
	return name + `="` + value + `"`
}

// num formats a coordinate compactly (one decimal, no trailing ".0").
// Callers validate their input, so a non-finite value here is a bug in this
// package; it is written as 0 rather than letting "NaN" reach the document,
// which SVG renderers reject.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "0"
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	if s == "-0" {
		s = "0"
	}
	return s
}

// textWidth estimates the rendered width of s. SVG has no text measurement
// without a renderer, and an estimate is enough to wrap legends and size
// margins. The factors are those of DejaVu Sans, the widest of the faces in
// fontFamily, so that text fits whichever face the viewer picks.
func textWidth(s string, size float64) float64 {
	var em float64
	for _, r := range s {
		switch {
		case strings.ContainsRune(" iljtfI.,:;'|!()[]", r):
			em += 0.32
		case strings.ContainsRune("mwMW%", r):
			em += 0.92
		case unicode.IsUpper(r):
			em += 0.72
		default:
			em += 0.6
		}
	}
	return em * size
}

// truncate shortens s with an ellipsis so that it fits in max at the given
// font size.
func truncate(s string, size, max float64) string {
	if textWidth(s, size) <= max {
		return s
	}
	r := []rune(s)
	for len(r) > 0 && textWidth(string(r)+"…", size) > max {
		r = r[:len(r)-1]
	}
	return strings.TrimRightFunc(string(r), unicode.IsSpace) + "…"
}

// rgb is a colour for interpolation and contrast decisions.
type rgb struct{ r, g, b float64 }

func parseHex(s string) rgb {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 16, 32)
	if err != nil {
		panic("plot: bad colour constant " + s)
	}
	return rgb{float64(v >> 16 & 0xff), float64(v >> 8 & 0xff), float64(v & 0xff)}
}

func (c rgb) hex() string {
	clamp := func(v float64) int { return int(math.Round(math.Max(0, math.Min(255, v)))) }
	return fmt.Sprintf("#%02x%02x%02x", clamp(c.r), clamp(c.g), clamp(c.b))
}

// luminance is the WCAG relative luminance, used to pick a text colour that
// stays readable on a filled segment.
func (c rgb) luminance() float64 {
	lin := func(v float64) float64 {
		v /= 255
		if v <= 0.03928 {
			return v / 12.92
		}
		return math.Pow((v+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(c.r) + 0.7152*lin(c.g) + 0.0722*lin(c.b)
}

// niceStep returns a 1-2-5 step that splits [0, max] into at most n intervals.
func niceStep(max float64, n int) float64 {
	if max <= 0 {
		return 1
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return math.Max(1, m*mag)
		}
	}
	return math.Max(1, 10*mag)
}
