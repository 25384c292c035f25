package plot

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Segment is one response category within a bar.
type Segment struct {
	Label string // e.g. "Complete response"
	Count int
	// Hidden marks the patients of categories withheld by small-cell suppression, drawn
	// as one hatched block on top of the bar so that the categories that are shown keep
	// their place and the bar its height. Its Label is the legend's explanation (e.g.
	// "Not shown: categories under 5"); it takes no colour of the response ramp and
	// prints no count.
	Hidden bool
}

// Bar is one follow-up timepoint.
type Bar struct {
	Label string // e.g. "Month 1"
	// N is printed above the bar; 0 means the sum of the segment counts.
	// Percentages are always shares of the segment sum, so that 100%-stacked
	// bars reach 100%.
	N int
	// Segments are drawn bottom-up in order, best category first.
	Segments []Segment
	// Suppressed marks a timepoint withheld by small-cell suppression. The
	// bar is drawn as a hatched placeholder; its N and Segments are never
	// read, so the caller may leave the real counts in place.
	Suppressed bool
}

// ResponseChart shows the distribution of response categories at each
// follow-up timepoint as stacked bars.
type ResponseChart struct {
	Title, Subtitle string
	Bars            []Bar
	Percent         bool // 100%-stacked bars; otherwise bar heights are counts
}

// responseStops run from dark green (best) through yellow to red (worst):
// the ColorBrewer RdYlGn ramp, reversed. Categories are spread evenly over it
// by rank, so the palette stays ordered whatever the number of categories.
var responseStops = []string{
	"#006837", "#1a9850", "#66bd63", "#a6d96a", "#d9ef8b",
	"#fee08b", "#fdae61", "#f46d43", "#d73027",
}

// rampColour returns the colour at position k of n on responseStops.
func rampColour(k, n int) rgb {
	if n <= 1 {
		return parseHex(responseStops[0])
	}
	pos := float64(k) / float64(n-1) * float64(len(responseStops)-1)
	i := int(math.Floor(pos))
	if i >= len(responseStops)-1 {
		return parseHex(responseStops[len(responseStops)-1])
	}
	f := pos - float64(i)
	a, b := parseHex(responseStops[i]), parseHex(responseStops[i+1])
	return rgb{a.r + f*(b.r-a.r), a.g + f*(b.g-a.g), a.b + f*(b.b-a.b)}
}

// categories merges the bars' segment lists into one best-to-worst order, so
// that a label gets the same colour in every bar. A label first seen in a
// later bar is slotted in after its predecessor there (or before its
// successor), keeping each bar's own ordering. Suppressed bars do not take
// part: even the presence of a category there is withheld.
func (c ResponseChart) categories() []string {
	var order []string
	index := func(label string) int {
		for i, l := range order {
			if l == label {
				return i
			}
		}
		return -1
	}
	insert := func(at int, label string) {
		order = append(order, "")
		copy(order[at+1:], order[at:])
		order[at] = label
	}
	for _, b := range c.Bars {
		if b.Suppressed {
			continue
		}
		b.Segments = shownSegments(b.Segments)
		for j, s := range b.Segments {
			if index(s.Label) >= 0 {
				continue
			}
			switch {
			case j > 0:
				insert(index(b.Segments[j-1].Label)+1, s.Label)
			default:
				at := len(order)
				for _, next := range b.Segments[1:] {
					if k := index(next.Label); k >= 0 {
						at = k
						break
					}
				}
				insert(at, s.Label)
			}
		}
	}
	return order
}

func (c ResponseChart) validate() error {
	for i, b := range c.Bars {
		if b.Suppressed {
			continue
		}
		if b.N < 0 {
			return fmt.Errorf("plot: bar %d (%q): negative N", i, b.Label)
		}
		for _, s := range b.Segments {
			if s.Count < 0 {
				return fmt.Errorf("plot: bar %d (%q) segment %q: negative count", i, b.Label, s.Label)
			}
		}
	}
	return nil
}

// shownSegments are a bar's segments without its hidden block.
func shownSegments(segs []Segment) []Segment {
	var shown []Segment
	for _, s := range segs {
		if !s.Hidden {
			shown = append(shown, s)
		}
	}
	return shown
}

// hiddenLabel is the legend text of the hidden blocks, "" when no bar has one.
func (c ResponseChart) hiddenLabel() string {
	for _, b := range c.Bars {
		if b.Suppressed {
			continue
		}
		for _, s := range b.Segments {
			if s.Hidden && s.Count > 0 {
				return s.Label
			}
		}
	}
	return ""
}

func total(b Bar) int {
	n := 0
	for _, s := range b.Segments {
		n += s.Count
	}
	return n
}

const (
	respWidth  = 960.0
	respHeight = 600.0
	respLeft   = 88.0
	respRight  = 40.0
	hatchID    = "cartreg-plot-hatch"
)

// WriteSVG draws the chart as a standalone SVG document. It fails only on
// negative counts and on errors from w; no bars renders a "No data" note.
func (c ResponseChart) WriteSVG(w io.Writer) error {
	if err := c.validate(); err != nil {
		return err
	}
	cats := c.categories()
	colour := make(map[string]rgb, len(cats))
	for k, l := range cats {
		colour[l] = rampColour(k, len(cats))
	}

	cv := newCanvas(respWidth, respHeight, c.Title, c.describe(cats))
	left, right := respLeft, respWidth-respRight
	y := cv.heading(20, headingTop, c.Title, c.Subtitle)

	// Legend: swatches in best-to-worst order, wrapped to the plot width.
	legendY := y + 20
	x := left
	for _, l := range cats {
		text := truncate(l, legendFont, right-left-20)
		w := 20 + textWidth(text, legendFont)
		if x > left && x+w > right {
			x, legendY = left, legendY+survRowHeight
		}
		cv.Group(attr("class", "legend-item"))
		cv.Rect(x, legendY-10, 13, 13, attr("fill", colour[l].hex()))
		cv.Text(x+19, legendY+1.5, text, attr("font-size", num(legendFont)), attr("fill", colText))
		cv.Gend()
		x += w + 24
	}
	if hidden := c.hiddenLabel(); hidden != "" {
		text := truncate(hidden, legendFont, right-left-20)
		w := 20 + textWidth(text, legendFont)
		if x > left && x+w > right {
			x, legendY = left, legendY+survRowHeight
		}
		cv.Group(attr("class", "legend-item hidden"))
		cv.Rect(x, legendY-10, 13, 13, attr("fill", "url(#"+hatchID+")"), attr("stroke", "#999999"), attr("stroke-width", "1"))
		cv.Text(x+19, legendY+1.5, text, attr("font-size", num(legendFont)), attr("fill", colText))
		cv.Gend()
	}
	if len(cats) == 0 && c.hiddenLabel() == "" {
		legendY -= survRowHeight
	}
	top := legendY + 40 // room for the "n =" labels over full bars

	// Bar geometry and x labels, which tilt when they would collide.
	slot := (right - left) / math.Max(1, float64(len(c.Bars)))
	barW := math.Min(slot*0.62, 120)
	tilt := false
	for _, b := range c.Bars {
		if textWidth(b.Label, 13) > slot-8 {
			tilt = true
		}
	}
	bottom := respHeight - 48
	if tilt {
		longest := 0.0
		for _, b := range c.Bars {
			longest = math.Max(longest, textWidth(truncate(b.Label, 13, 160), 13))
		}
		bottom = respHeight - 30 - longest*math.Sin(math.Pi/6)
	}

	// Y scale: 0-100% or 0 to a round count above the tallest bar.
	ymax, step := 100.0, 20.0
	if !c.Percent {
		most := 0
		for _, b := range c.Bars {
			if !b.Suppressed {
				most = max(most, total(b))
			}
		}
		step = niceStep(float64(most), 5)
		ymax = math.Max(step, math.Ceil(float64(most)/step)*step)
	}
	yAt := func(v float64) float64 { return bottom - v/ymax*(bottom-top) }

	tick := attr("font-size", "12")
	for v := 0.0; v <= ymax+1e-9; v += step {
		yy := yAt(v)
		if v > 0 {
			cv.Line(left, yy, right, yy, attr("stroke", colGrid), attr("stroke-width", "1"))
		}
		label := strconv.FormatFloat(v, 'f', -1, 64)
		if c.Percent {
			label += "%"
		}
		cv.Text(left-8, yy+4, label, tick, attr("fill", colText), attr("text-anchor", "end"))
	}
	ylabel := "Patients"
	if c.Percent {
		ylabel = "Patients (%)"
	}
	ymid, yx := (top+bottom)/2, left-52
	cv.Text(yx, ymid, ylabel, attr("font-size", "13"), attr("fill", colText), attr("text-anchor", "middle"),
		attr("transform", "rotate(-90 "+num(yx)+" "+num(ymid)+")"))

	if len(c.Bars) == 0 {
		cv.noData(left, top, right, bottom)
	}
	if c.anySuppressed() {
		cv.Def()
		cv.Pattern(hatchID, 0, 0, 7, 7, "user", attr("patternTransform", "rotate(45)"))
		cv.Line(0, 0, 0, 7, attr("stroke", "#c4c4c4"), attr("stroke-width", "2.5"))
		cv.PatternEnd()
		cv.DefEnd()
	}

	for i, b := range c.Bars {
		cx := left + slot*(float64(i)+0.5)
		x0 := cx - barW/2
		label := truncate(b.Label, 13, 160)
		if b.Suppressed {
			cv.Group(attr("class", "bar suppressed"))
		} else {
			cv.Group(attr("class", "bar"))
		}
		if tilt {
			cv.Text(cx+4, bottom+16, label, attr("font-size", "13"), attr("fill", colText), attr("text-anchor", "end"),
				attr("transform", "rotate(-30 "+num(cx+4)+" "+num(bottom+16)+")"))
		} else {
			cv.Text(cx, bottom+20, label, attr("font-size", "13"), attr("fill", colText), attr("text-anchor", "middle"))
		}
		if b.Suppressed {
			cv.Rect(x0, top, barW, bottom-top, attr("fill", "url(#"+hatchID+")"),
				attr("stroke", "#999999"), attr("stroke-width", "1"), attr("stroke-dasharray", "4 3"))
			c.suppressedNote(cv, cx, (top+bottom)/2, barW)
			cv.Gend()
			continue
		}
		sum := total(b)
		n := b.N
		if n == 0 {
			n = sum
		}
		base := 0.0
		// The hidden block goes on top whatever its place in the list.
		segments := shownSegments(b.Segments)
		for _, s := range b.Segments {
			if s.Hidden {
				segments = append(segments, s)
			}
		}
		for _, s := range segments {
			if s.Count == 0 {
				continue
			}
			v := float64(s.Count)
			if c.Percent {
				v = 100 * v / float64(sum)
			}
			y0, y1 := yAt(base+v), yAt(base)
			if s.Hidden {
				cv.Rect(x0, y0, barW, y1-y0, attr("class", "segment hidden"), attr("fill", "url(#"+hatchID+")"),
					attr("stroke", "#999999"), attr("stroke-width", "1"))
				base += v
				continue
			}
			col := colour[s.Label]
			cv.Rect(x0, y0, barW, y1-y0, attr("class", "segment"), attr("fill", col.hex()), attr("stroke", colBackdrop), attr("stroke-width", "1"))
			text := strconv.Itoa(s.Count)
			if c.Percent {
				text = strconv.Itoa(int(math.Round(v))) + "%"
			}
			if y1-y0 >= 17 && textWidth(text, 12) <= barW-6 {
				fg := "#ffffff"
				if col.luminance() > 0.35 {
					fg = colText
				}
				cv.Text(cx, (y0+y1)/2+4, text, attr("font-size", "12"), attr("fill", fg), attr("text-anchor", "middle"))
			}
			base += v
		}
		cv.Text(cx, yAt(base)-7, "n = "+strconv.Itoa(n), attr("font-size", "12"), attr("fill", colSubtle), attr("text-anchor", "middle"))
		cv.Gend()
	}
	axisStyle := []string{attr("stroke", colAxis), attr("stroke-width", "1")}
	cv.Line(left, top, left, bottom, axisStyle...)
	cv.Line(left, bottom, right, bottom, axisStyle...)
	return cv.finish(w)
}

// suppressedNote labels a suppressed placeholder bar, on a white patch so
// the hatching does not run through the text; narrow bars get it sideways.
func (ResponseChart) suppressedNote(cv *canvas, cx, mid, barW float64) {
	style := []string{attr("font-size", "12"), attr("fill", colSubtle), attr("text-anchor", "middle")}
	lines := []string{"suppressed", "(<5)"}
	if w := textWidth(lines[0], 12); w+10 <= barW {
		cv.Rect(cx-w/2-4, mid-20, w+8, 38, attr("fill", colBackdrop))
		cv.Text(cx, mid-4, lines[0], style...)
		cv.Text(cx, mid+12, lines[1], style...)
		return
	}
	text := strings.Join(lines, " ")
	w := textWidth(text, 12)
	rot := attr("transform", "rotate(-90 "+num(cx)+" "+num(mid)+")")
	cv.Rect(cx-w/2-4, mid-11, w+8, 17, attr("fill", colBackdrop), rot)
	cv.Text(cx, mid+2, text, append(style, rot)...)
}

// anySuppressed says whether the hatch pattern is needed: a withheld bar or a hidden block.
func (c ResponseChart) anySuppressed() bool {
	for _, b := range c.Bars {
		if b.Suppressed {
			return true
		}
	}
	return c.hiddenLabel() != ""
}

// describe is the <desc> text for screen readers. It lists timepoints and
// categories but, like the figure, nothing of a suppressed bar.
func (c ResponseChart) describe(cats []string) string {
	if len(c.Bars) == 0 {
		return "Stacked bar chart of response categories with no data."
	}
	labels := make([]string, len(c.Bars))
	for i, b := range c.Bars {
		labels[i] = b.Label
		if b.Suppressed {
			labels[i] += " (suppressed)"
		}
	}
	text := fmt.Sprintf("Stacked bar chart of response categories (%s) at %s.",
		strings.Join(cats, ", "), strings.Join(labels, ", "))
	if hidden := c.hiddenLabel(); hidden != "" {
		text += " Hatched blocks: " + hidden + "."
	}
	return text
}
