package outbox

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KindSubscription is the Kind of FHIR Subscription notifications. Their targets are chosen by
// API clients, not by the administrator, so the Deliverer sends them only within
// Config.SubscriptionEndpoints.
const KindSubscription = "subscription"

// AllowList is where client-chosen webhooks may be sent: an administrator's list of URL
// prefixes, host names and address ranges. The zero value and nil allow nothing.
//
// An entry is one of
//   - a URL prefix, "https://hooks.example.org/cartreg/": targets with that scheme, host and
//     port whose path starts with the prefix's (at a segment boundary when the prefix does not
//     end in "/");
//   - a host, "hooks.example.org" or "hooks.example.org:8443": any http(s) URL on it (on that
//     port only, when one is given); "*.example.org" is any host below example.org;
//   - an IP address or a CIDR range, "10.20.0.0/16": URLs whose host is an address in it.
//
// Addresses that are not public (loopback, private, link-local, shared, reserved) are refused
// when a notification is sent, whatever host name led to them, unless an entry names them as
// an address or a range: a host name on the list cannot be re-pointed at the internal
// network by whoever controls its DNS.
type AllowList struct {
	prefixes []*url.URL
	hosts    []hostEntry
	nets     []netip.Prefix // endpoints whose host is an address in one, on any port
	dial     []dialRule     // addresses named by an entry, which may be connected to

	entries []string
}

// dialRule is a range of addresses that may be connected to though not public, on port
// only when that is not 0.
type dialRule struct {
	net  netip.Prefix
	port uint16
}

type hostEntry struct {
	name string // lower case; "*.example.org" for a wildcard
	port string // "" for any
}

// ParseAllowList reads the entries of an AllowList; blank entries are skipped.
func ParseAllowList(entries []string) (*AllowList, error) {
	a := &AllowList{}
	for _, raw := range entries {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		a.entries = append(a.entries, e)
		if strings.Contains(e, "://") {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
				u.RawQuery != "" || u.Fragment != "" || hasDotSegment(u.EscapedPath()) {
				return nil, fmt.Errorf("endpoint allow-list entry %q: want an http(s) URL prefix without credentials, query or dot segments", e)
			}
			u.Host = strings.ToLower(u.Host)
			if u.Path == "" {
				u.Path = "/"
			}
			if addr, err := netip.ParseAddr(u.Hostname()); err == nil {
				port := u.Port()
				if port == "" {
					port = defaultPort(u.Scheme)
				}
				u.Host = canonicalHost(addr, port)
				a.dial = append(a.dial, dialRule{single(addr), portNumber(port)})
			}
			a.prefixes = append(a.prefixes, u)
			continue
		}
		if p, err := netip.ParsePrefix(e); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			a.nets = append(a.nets, p.Masked())
			a.dial = append(a.dial, dialRule{net: p.Masked()})
			continue
		}
		if addr, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
			a.nets = append(a.nets, single(addr))
			a.dial = append(a.dial, dialRule{net: single(addr)})
			continue
		}
		host, port := e, ""
		if h, p, err := net.SplitHostPort(e); err == nil {
			host, port = h, p
		}
		if addr, err := netip.ParseAddr(host); err == nil {
			a.hosts = append(a.hosts, hostEntry{name: addr.Unmap().String(), port: port})
			a.dial = append(a.dial, dialRule{single(addr), portNumber(port)})
			continue
		}
		if !validHostName(strings.TrimPrefix(host, "*.")) {
			return nil, fmt.Errorf("endpoint allow-list entry %q: want a URL prefix, a host name, an IP address or a CIDR range", e)
		}
		a.hosts = append(a.hosts, hostEntry{name: strings.ToLower(host), port: port})
	}
	return a, nil
}

func portNumber(port string) uint16 {
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

func single(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen())
}

// canonicalHost is an address and port as a URL's host, so that spellings of one address
// compare equal.
func canonicalHost(addr netip.Addr, port string) string {
	addr = addr.Unmap()
	h := addr.String()
	if addr.Is6() {
		h = "[" + h + "]"
	}
	if port != "" {
		h += ":" + port
	}
	return h
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// Empty reports whether the list allows nothing.
func (a *AllowList) Empty() bool { return a == nil || len(a.entries) == 0 }

// String is the entries, comma-separated, as an administrator gave them.
func (a *AllowList) String() string {
	if a == nil {
		return ""
	}
	return strings.Join(a.entries, ",")
}

// Allows reports whether target, an http(s) URL, is within an entry.
func (a *AllowList) Allows(target string) bool {
	if a.Empty() {
		return false
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || hasDotSegment(u.EscapedPath()) {
		return false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	addr, addrErr := netip.ParseAddr(host)
	if addrErr == nil {
		host = addr.Unmap().String()
	}
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	for _, p := range a.prefixes {
		pport := p.Port()
		if pport == "" {
			pport = defaultPort(p.Scheme)
		}
		if p.Scheme != u.Scheme || strings.Trim(p.Hostname(), "[]") != host || pport != port {
			continue
		}
		path := u.EscapedPath()
		if path == "" {
			path = "/"
		}
		prefix := p.EscapedPath()
		if strings.HasSuffix(prefix, "/") && strings.HasPrefix(path, prefix) ||
			path == prefix || strings.HasPrefix(path, prefix+"/") {
			return true
		}
	}
	for _, h := range a.hosts {
		if h.port != "" && h.port != port {
			continue
		}
		if h.name == host || strings.HasPrefix(h.name, "*.") && strings.HasSuffix(host, h.name[1:]) {
			return true
		}
	}
	if addrErr == nil {
		for _, n := range a.nets {
			if n.Contains(addr.Unmap()) {
				return true
			}
		}
	}
	return false
}

// AllowsAddress reports whether a notification may connect to ap: a public address, or one
// an entry names as an address or a range (and with the entry's port, when it gives one).
func (a *AllowList) AllowsAddress(ap netip.AddrPort) bool {
	addr := ap.Addr().Unmap()
	if a != nil {
		for _, r := range a.dial {
			if r.net.Contains(addr) && (r.port == 0 || r.port == ap.Port()) {
				return true
			}
		}
	}
	return isPublic(addr)
}

// nonPublic are special-purpose ranges the netip predicates do not cover (RFC 6890 and
// successors): "this network", shared address space (carrier-grade NAT), IETF protocol
// assignments, benchmarking, reserved, and IPv6 prefixes that embed IPv4 addresses.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("100::/64"),
}

func isPublic(addr netip.Addr) bool {
	if !addr.IsValid() || addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() ||
		addr.IsLinkLocalMulticast() || addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// hasDotSegment reports whether an escaped URL path has "." or ".." segments, plainly or
// percent-encoded, or an encoded slash or backslash: a receiver that normalises the path
// could then serve something outside the prefix it was allowed by.
func hasDotSegment(escapedPath string) bool {
	lower := strings.ToLower(escapedPath)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, `\`) {
		return true
	}
	for _, seg := range strings.Split(lower, "/") {
		seg = strings.ReplaceAll(seg, "%2e", ".")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// ErrAddressRefused is the cause of a failed send to an address the allow-list does not let
// notifications reach.
var ErrAddressRefused = errors.New("address refused")

// guardedClient is client with a dialer that connects only to addresses allow admits, and no
// proxy (a proxy would make the connection on our behalf, wherever the URL says). A client
// whose Transport is not an *http.Transport is returned as it is: its dialing is its own.
func guardedClient(client *http.Client, allow *AllowList) *http.Client {
	var base *http.Transport
	switch t := client.Transport.(type) {
	case nil:
		base = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		base = t.Clone()
	default:
		return client
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %q is not an address", ErrAddressRefused, address)
			}
			if !allow.AllowsAddress(ap) {
				return fmt.Errorf("%w: %s is not a public address and no endpoint allow-list entry names it", ErrAddressRefused, ap.Addr())
			}
			return nil
		}}
	base.Proxy = nil
	base.DialContext = dialer.DialContext
	base.DialTLSContext = nil
	guarded := *client
	guarded.Transport = base
	return &guarded
}

// hopByHop are the header fields that belong to one connection or to the transport, which a
// Subscription's header lines must not set (RFC 9110, section 7.6.1), and Host, which would
// send the request to another virtual host than the endpoint names.
var hopByHop = map[string]bool{
	"Connection": true, "Transfer-Encoding": true, "Host": true, "Content-Length": true, "Upgrade": true,
	"Te": true, "Trailer": true, "Keep-Alive": true,
}

// ParseHeaderLine reads one "Name: value" header line, such as a FHIR Subscription's
// channel.header: the name an HTTP token and not a hop-by-hop or transport field
// (Connection, Transfer-Encoding, Host, Content-Length, Upgrade, Proxy-*, TE, Trailer,
// Keep-Alive); the value, trimmed, without control characters.
func ParseHeaderLine(line string) (name, value string, err error) {
	name, value, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", errors.New(`want "Name: value"`)
	}
	name, value = strings.TrimSpace(name), strings.Trim(value, " \t")
	if err := checkHeader(name, value); err != nil {
		return "", "", err
	}
	return name, value, nil
}

func checkHeader(name, value string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("header name %q is not an HTTP token", name)
	}
	canonical := http.CanonicalHeaderKey(name)
	if hopByHop[canonical] || strings.HasPrefix(canonical, "Proxy-") {
		return fmt.Errorf("header %s is hop-by-hop or set by the transport, and cannot be given", canonical)
	}
	for _, c := range []byte(value) {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("header %s: its value holds a control character (%#02x)", canonical, c)
		}
	}
	return nil
}
