package searchparam

import (
	"testing"
	"time"
)

func TestNormalizeString(t *testing.T) {
	for in, want := range map[string]string{
		"Chalmers":            "chalmers",
		"Érica":               "erica",
		"  du   Marché\t\n":   "du marche",
		"ÅNGSTRÖM Zoë":        "angstrom zoe",
		"São Paulo":           "sao paulo",
		"Ça\u00a0va":          "ca va", // no-break space is white space
		"Straße":              "straße",
		"e\u0301":             "e", // already decomposed
		"":                    "",
		"   ":                 "",
		"Ｆｕｌｌ":                "ｆｕｌｌ",
		"Müller-Lüdenscheidt": "muller-ludenscheidt",
	} {
		if got := NormalizeString(in); got != want {
			t.Errorf("NormalizeString(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDateRange(t *testing.T) {
	cases := []struct{ in, low, high string }{
		{"2013", "2013-01-01T00:00:00Z", "2014-01-01T00:00:00Z"},
		{"2013-02", "2013-02-01T00:00:00Z", "2013-03-01T00:00:00Z"},
		{"2012-02-29", "2012-02-29T00:00:00Z", "2012-03-01T00:00:00Z"},
		{"2013-06-01T10:00", "2013-06-01T10:00:00Z", "2013-06-01T10:01:00Z"},
		{"2013-06-01T10:00:05", "2013-06-01T10:00:05Z", "2013-06-01T10:00:06Z"},
		{"2013-06-01T10:00:05Z", "2013-06-01T10:00:05Z", "2013-06-01T10:00:06Z"},
		{"2013-06-01T10:00:05+02:00", "2013-06-01T08:00:05Z", "2013-06-01T08:00:06Z"},
		{"2013-06-01T00:30:00-05:30", "2013-06-01T06:00:00Z", "2013-06-01T06:00:01Z"},
		{"2013-06-01T10:00:05.5Z", "2013-06-01T10:00:05.5Z", "2013-06-01T10:00:05.6Z"},
		{"2013-06-01T10:00:05.123Z", "2013-06-01T10:00:05.123Z", "2013-06-01T10:00:05.124Z"},
		{"2013-06-01T10:00:05.123456789123Z", "2013-06-01T10:00:05.123456789Z", "2013-06-01T10:00:05.12345679Z"},
		{"2013-12-31T23:59:59Z", "2013-12-31T23:59:59Z", "2014-01-01T00:00:00Z"},
		{"0001", "0001-01-01T00:00:00Z", "0002-01-01T00:00:00Z"},
	}
	for _, c := range cases {
		low, high, ok := DateRange(c.in)
		if !ok || low != utc(c.low) || high != utc(c.high) {
			t.Errorf("DateRange(%q) = [%v, %v) %v, want [%s, %s)", c.in, low, high, ok, c.low, c.high)
		}
		if ok && (low.Location() != time.UTC || high.Location() != time.UTC) {
			t.Errorf("DateRange(%q) not in UTC", c.in)
		}
	}
	// The end of 9999 is clipped to MaxTime.
	if _, high, ok := DateRange("9999"); !ok || high != MaxTime {
		t.Errorf("DateRange(9999) high = %v, want MaxTime", high)
	}
	for _, bad := range []string{
		"", "13", "2013-", "2013-13", "2013-00", "2013-02-30", "2013-06-01T", "2013-06-01T25:00",
		"2013-06-01T10:60", "2013-06-01T10:00:61", "2013-06-01T10:00:00.", "2013-06-01T10:00:00X",
		"2013-06-01T10:00:00+2:00", "2013-06-01T10:00:00+15:00", "0000", "yesterday", "2013/06/01",
		"2013-06-01 10:00:00",
	} {
		if _, _, ok := DateRange(bad); ok {
			t.Errorf("DateRange(%q) accepted", bad)
		}
	}
}

func TestNumberRange(t *testing.T) {
	cases := []struct {
		in               string
		value, low, high float64
	}{
		{"100", 100, 99.5, 100.5},
		{"1.50", 1.5, 1.495, 1.505},
		{"1.5", 1.5, 1.45, 1.55},
		{"0.001530", 0.00153, 0.0015295, 0.0015305},
		{"-2.5", -2.5, -2.55, -2.45},
		{"0", 0, -0.5, 0.5},
		{"1e2", 100, 50, 150},
		{"1.00e2", 100, 99.5, 100.5},
		{"1.0E-3", 0.001, 0.00095, 0.00105},
		{"12345678901234567890", 12345678901234567890, 12345678901234567889.5, 12345678901234567890.5},
	}
	for _, c := range cases {
		value, low, high, ok := NumberRange(c.in)
		if !ok || value != c.value || low != c.low || high != c.high {
			t.Errorf("NumberRange(%q) = %v [%v, %v) %v, want %v [%v, %v)", c.in, value, low, high, ok, c.value, c.low, c.high)
		}
	}
	for _, bad := range []string{"", "x", "1e", "1e400", "NaN", "Inf", "0x10", "1.2.3"} {
		if _, _, _, ok := NumberRange(bad); ok {
			t.Errorf("NumberRange(%q) accepted", bad)
		}
	}
}
