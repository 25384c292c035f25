package server

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// assignRequestID gives every request an id of the server's own. A client's X-Request-Id is
// never taken as it is: the id is quoted in error bodies and logs, where a client's text could
// forge log lines or carry script. A well-formed one is kept in the log as client_request_id,
// so a client can still follow its request.
func assignRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderXRequestID, uuid.NewString())
		return next(c)
	}
}

var clientRequestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:\-]{1,128}$`)

// clientRequestID is the client's own X-Request-Id, if it is a plain token.
func clientRequestID(c echo.Context) string {
	if id := c.Request().Header.Get(echo.HeaderXRequestID); clientRequestIDPattern.MatchString(id) {
		return id
	}
	return ""
}

// secureHeaders are on every response. Everything this server answers may carry patient data
// (a search, a work list, an error naming a resource), so nothing may be stored by a cache or
// a browser; responses are data, never to be sniffed into HTML or framed.
func secureHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		return next(c)
	}
}

// cors allows browsers on the configured origins, and no others: with none configured it
// adds nothing, so no browser page elsewhere may read a response.
func cors(origins []string) echo.MiddlewareFunc {
	if len(origins) == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins:     origins,
		AllowMethods:     []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		AllowHeaders:     []string{"Authorization", "Content-Type", "Accept", "If-Match", "If-None-Exist", "If-None-Match", "If-Modified-Since", "Prefer"},
		ExposeHeaders:    []string{"Location", "Content-Location", "ETag", "Last-Modified", echo.HeaderXRequestID},
		AllowCredentials: false,
		MaxAge:           600,
	})
}

// forwardedHeaders are what a proxy says about the original request; only a trusted proxy's
// are believed.
var forwardedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Protocol",
	"X-Forwarded-Ssl", "X-Url-Scheme", "X-Real-Ip", "Forwarded"}

// trustHost settles the Host a request is taken to have been sent to, which becomes the base
// of every link the server writes (fullUrls, next pages, Locations) when no base URL is
// configured. A Host header is the client's to choose, so it is replaced by *host (the address
// the server listens on) unless that is empty; proxies' X-Forwarded-*
// headers are dropped unless the connection comes from a trusted proxy, whose
// X-Forwarded-Host is then taken.
func trustHost(host *string, proxies []*net.IPNet) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if fromTrustedProxy(req.RemoteAddr, proxies) {
				if fh := req.Header.Get("X-Forwarded-Host"); fh != "" {
					req.Host = strings.TrimSpace(strings.Split(fh, ",")[0])
				}
				return next(c)
			}
			for _, name := range forwardedHeaders {
				req.Header.Del(name)
			}
			if *host != "" {
				req.Host = *host
			}
			return next(c)
		}
	}
}

func fromTrustedProxy(remoteAddr string, proxies []*net.IPNet) bool {
	if len(proxies) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range proxies {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// ParseProxies reads trusted proxies: IP addresses or CIDR ranges, comma-separated.
func ParseProxies(s string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			ip := net.ParseIP(part)
			if ip == nil {
				return nil, fmt.Errorf("trusted proxy %q: not an IP address or CIDR range", part)
			}
			bits := 32
			if ip.To4() == nil {
				bits = 128
			}
			part = fmt.Sprintf("%s/%d", ip, bits)
		}
		_, n, err := net.ParseCIDR(part)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", part, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// ParseOrigins reads CORS origins: absolute http(s) origins, comma-separated. "*" is refused:
// a registry of patient data names the sites allowed to read it.
func ParseOrigins(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("CORS origin %q: want an origin such as https://app.example.org", part)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
}
