package registry

import "sort"

// cells are the counts of one table being prepared for researchers, with the rule that no
// count of 1 to minCell-1 patients is shown (primary suppression), nor can one be worked out
// by subtraction from the counts around it (secondary suppression: where a total is shown and
// exactly one of its parts is hidden, the smallest other part is hidden too).
type cells struct {
	value     map[string]int
	hidden    map[string]bool
	relations [][]string // each: a total, then the parts it is the sum of
}

func newCells() *cells { return &cells{value: map[string]int{}, hidden: map[string]bool{}} }

func (c *cells) set(key string, n int) { c.value[key] = n }

// sumOf records that total is the sum of parts.
func (c *cells) sumOf(total string, parts ...string) {
	c.relations = append(c.relations, append([]string{total}, parts...))
}

func (c *cells) suppress(minCell int) {
	if minCell <= 1 {
		return
	}
	for k, n := range c.value {
		if n > 0 && n < minCell {
			c.hidden[k] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, rel := range c.relations {
			total, parts := rel[0], rel[1:]
			if c.hidden[total] {
				continue
			}
			var hiddenParts int
			var visible []string
			for _, p := range parts {
				if c.hidden[p] {
					hiddenParts++
				} else if c.value[p] > 0 {
					visible = append(visible, p)
				}
			}
			if hiddenParts != 1 {
				continue
			}
			if len(visible) == 0 {
				c.hidden[total] = true
			} else {
				sort.SliceStable(visible, func(i, j int) bool { return c.value[visible[i]] < c.value[visible[j]] })
				c.hidden[visible[0]] = true
			}
			changed = true
		}
	}
}

// get is the count as researchers see it: nil when suppressed.
func (c *cells) get(key string) *int {
	if c.hidden[key] {
		return nil
	}
	n := c.value[key]
	return &n
}

// shows says whether a proportion num/den may be shown: both counts shown, and neither the
// numerator nor the rest of the denominator a small number.
func (c *cells) shows(num, den string, minCell int) bool {
	if c.hidden[num] || c.hidden[den] {
		return false
	}
	rest := c.value[den] - c.value[num]
	return minCell <= 1 || rest == 0 || rest >= minCell
}
