package searchparam

import (
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// DateRange returns the instants a FHIR date, dateTime or instant covers, by the
// precision it is written with: "2013" is [2013-01-01T00:00:00Z, 2014-01-01T00:00:00Z),
// "2013-06-01T10:00:00+02:00" is the second from 08:00:00Z, "…:00.250Z" the millisecond.
// Low is inclusive, High exclusive, both UTC; a time without a zone is taken as UTC. The
// end of year 9999 is clipped to MaxTime. ok is false when s is not such a value.
func DateRange(s string) (low, high time.Time, ok bool) {
	year, rest, ok := digits(s, 4)
	if !ok || year == 0 {
		return low, high, false
	}
	month, day := 1, 1
	if rest == "" {
		low = time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
		return low, clip(low.AddDate(1, 0, 0)), true
	}
	if month, rest, ok = field(rest, '-', 2); !ok || month < 1 || month > 12 {
		return low, high, false
	}
	if rest == "" {
		low = time.Date(year, time.Month(month), 1, 0, 0, 0, 0, time.UTC)
		return low, clip(low.AddDate(0, 1, 0)), true
	}
	if day, rest, ok = field(rest, '-', 2); !ok || day < 1 || day > daysIn(year, month) {
		return low, high, false
	}
	if rest == "" {
		low = time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
		return low, clip(low.AddDate(0, 0, 1)), true
	}

	// A time: hh:mm, hh:mm:ss or hh:mm:ss.fff, then Z, ±hh:mm or nothing.
	hour, rest, ok := field(rest, 'T', 2)
	if !ok || hour > 23 {
		return low, high, false
	}
	minute, rest, ok := field(rest, ':', 2)
	if !ok || minute > 59 {
		return low, high, false
	}
	second, nanos := 0, 0
	step := time.Minute
	if strings.HasPrefix(rest, ":") {
		if second, rest, ok = field(rest, ':', 2); !ok || second > 59 {
			return low, high, false
		}
		step = time.Second
		if strings.HasPrefix(rest, ".") {
			n := 1
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			frac := rest[1:n]
			if frac == "" {
				return low, high, false
			}
			rest = rest[n:]
			if len(frac) > 9 {
				frac = frac[:9] // finer than a nanosecond: keep what time.Time holds
			}
			nanos, _ = strconv.Atoi(frac + strings.Repeat("0", 9-len(frac)))
			step = time.Duration(math.Pow10(9 - len(frac)))
		}
	}
	loc := time.UTC
	switch {
	case rest == "" || rest == "Z":
	case rest[0] == '+' || rest[0] == '-':
		h, m, ok := zone(rest[1:])
		if !ok {
			return low, high, false
		}
		offset := h*3600 + m*60
		if rest[0] == '-' {
			offset = -offset
		}
		loc = time.FixedZone("", offset)
	default:
		return low, high, false
	}
	low = time.Date(year, time.Month(month), day, hour, minute, second, nanos, loc).UTC()
	return low, clip(low.Add(step)), true
}

// digits reads n decimal digits at the start of s.
func digits(s string, n int) (int, string, bool) {
	if len(s) < n {
		return 0, s, false
	}
	v := 0
	for i := 0; i < n; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, s, false
		}
		v = v*10 + int(c-'0')
	}
	return v, s[n:], true
}

// field reads a separator and n digits.
func field(s string, sep byte, n int) (int, string, bool) {
	if s == "" || s[0] != sep {
		return 0, s, false
	}
	return digits(s[1:], n)
}

func zone(s string) (h, m int, ok bool) {
	h, rest, ok := digits(s, 2)
	if !ok || h > 14 {
		return 0, 0, false
	}
	m, rest, ok = field(rest, ':', 2)
	return h, m, ok && rest == "" && m < 60
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func clip(t time.Time) time.Time {
	if t.After(MaxTime) {
		return MaxTime
	}
	return t
}

// NumberRange reads a decimal as written in JSON ("100", "1.50", "-2.5e3") and returns its
// value and the range its precision implies: half a unit of the last significant digit
// either side, so "100" is [99.5, 100.5) and "1.50" is [1.495, 1.505). Exponents follow
// the same rule: "1e2" has one significant digit, in the hundreds, and is [50, 150). The
// bounds are
// computed in decimal and then rounded once, so they are the floats nearest the exact
// bounds. ok is false when s is not a number.
func NumberRange(s string) (value, low, high float64, ok bool) {
	value, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(value, 0) || math.IsNaN(value) {
		return 0, 0, 0, false
	}
	mantissa, exponent := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mantissa = s[:i]
		if exponent, err = strconv.Atoi(s[i+1:]); err != nil {
			return 0, 0, 0, false
		}
	}
	negative := strings.HasPrefix(mantissa, "-")
	mantissa = strings.TrimLeft(mantissa, "+-")
	scale := 0 // value = ±mantissaDigits × 10^(exponent-scale)
	if i := strings.IndexByte(mantissa, '.'); i >= 0 {
		scale = len(mantissa) - i - 1
		mantissa = mantissa[:i] + mantissa[i+1:]
	}
	m, good := new(big.Int).SetString(mantissa, 10)
	if !good {
		return 0, 0, 0, false
	}
	// ±(m·10 ∓ 5) × 10^(exponent-scale-1) are the exact bounds.
	m.Mul(m, big.NewInt(10))
	lowMag := new(big.Int).Sub(m, big.NewInt(5))
	highMag := new(big.Int).Add(m, big.NewInt(5))
	exp := strconv.Itoa(exponent - scale - 1)
	lo, _ := strconv.ParseFloat(lowMag.String()+"e"+exp, 64)
	hi, _ := strconv.ParseFloat(highMag.String()+"e"+exp, 64)
	if negative {
		lo, hi = -hi, -lo
	}
	return value, lo, hi, true
}
