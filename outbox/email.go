package outbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/wneessen/go-mail"
)

// The SMTP connection's TLS modes.
const (
	TLSNone     = "none"     // plain text: only for a relay on the same host or network
	TLSStartTLS = "starttls" // STARTTLS required (the default; usually port 587)
	TLSImplicit = "tls"      // TLS from the first byte (usually port 465)
)

// SMTPConfig is the mail server the e-mail channel sends through.
type SMTPConfig struct {
	Host string // the e-mail channel is off when empty
	// Port defaults to 25 with TLSNone, 587 with TLSStartTLS and 465 with TLSImplicit.
	Port     int
	Username string // SMTP AUTH, with the best mechanism the server offers, when set
	Password string
	From     string // the sender address, e.g. "cartreg <registry@hospital.example>"
	TLS      string // TLSNone, TLSStartTLS (default) or TLSImplicit
	// TLSConfig, when set, replaces the default (verify the server's certificate for Host).
	TLSConfig *tls.Config
	// Timeout bounds each SMTP exchange; default 30 s.
	Timeout time.Duration
}

// Validate reports a configuration that could not send anything, for checking at start-up.
// A zero SMTPConfig (e-mail off) is valid.
func (c SMTPConfig) Validate() error {
	if c.Host == "" {
		return nil
	}
	switch c.TLS {
	case "", TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return fmt.Errorf("SMTP TLS mode %q: want %s, %s or %s", c.TLS, TLSNone, TLSStartTLS, TLSImplicit)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("SMTP port %d out of range", c.Port)
	}
	if _, err := netmail.ParseAddress(c.From); err != nil {
		return fmt.Errorf("SMTP sender %q: %w", c.From, err)
	}
	return nil
}

func (c SMTPConfig) clientOptions() []mail.Option {
	port := c.Port
	opts := []mail.Option{mail.WithTimeout(c.Timeout)}
	switch c.TLS {
	case TLSNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
		port = orDefault(port, 25)
	case TLSImplicit:
		opts = append(opts, mail.WithSSL())
		port = orDefault(port, 465)
	default:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
		port = orDefault(port, 587)
	}
	opts = append(opts, mail.WithPort(port))
	if c.TLSConfig != nil {
		opts = append(opts, mail.WithTLSConfig(c.TLSConfig))
	}
	if c.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(c.Username), mail.WithPassword(c.Password))
	}
	return opts
}

func orDefault(port, fallback int) int {
	if port == 0 {
		return fallback
	}
	return port
}

// sendEmail sends m through the configured server; the server's accepting it is a delivery.
func (d *Deliverer) sendEmail(ctx context.Context, m *message, now time.Time) sendResult {
	cfg := d.cfg.SMTP
	if cfg.Host == "" {
		return sendResult{err: errors.New("the e-mail channel is off (no SMTP host configured)")}
	}
	if err := cfg.Validate(); err != nil {
		return sendResult{err: err}
	}
	msg, err := buildEmail(cfg.From, m, now)
	if err != nil {
		return sendResult{err: err}
	}
	client, err := mail.NewClient(cfg.Host, cfg.clientOptions()...)
	if err != nil {
		return sendResult{err: fmt.Errorf("SMTP client: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		var sendErr *mail.SendError
		if errors.As(err, &sendErr) {
			return sendResult{status: sendErr.ErrorCode(), err: fmt.Errorf("SMTP: %w", err)}
		}
		return sendResult{err: fmt.Errorf("SMTP: %w", err)}
	}
	return sendResult{}
}

func buildEmail(from string, m *message, now time.Time) (*mail.Msg, error) {
	to, err := netmail.ParseAddressList(m.Target)
	if err != nil {
		return nil, fmt.Errorf("e-mail target: %w", err)
	}
	msg := mail.NewMsg()
	if err := msg.From(from); err != nil {
		return nil, fmt.Errorf("SMTP sender %q: %w", from, err)
	}
	msg.ToMailAddress(to...)
	msg.Subject(m.Subject)
	msg.SetDateWithValue(now)
	// The same Message-ID on every attempt lets mail systems drop a repeated delivery.
	sum := sha256.Sum256([]byte(m.Key))
	msg.SetMessageIDWithValue(hex.EncodeToString(sum[:16]) + "@cartreg.delivery")
	msg.SetGenHeader(mail.Header(HeaderDelivery), m.Key)

	mediaType := "text/plain"
	if m.ContentType != "" {
		if mediaType, _, err = mime.ParseMediaType(m.ContentType); err != nil {
			return nil, fmt.Errorf("content type %q: %w", m.ContentType, err)
		}
	}
	if mediaType == "text/plain" {
		msg.SetBodyString(mail.TypeTextPlain, string(m.Body))
		return msg, nil
	}
	name := attachmentName(m.Kind, mediaType)
	msg.SetBodyString(mail.TypeTextPlain, fmt.Sprintf("A cartreg %s notification: its content is attached as %s (%s).\n",
		m.Kind, name, mediaType))
	if err := msg.AttachReader(name, bytes.NewReader(m.Body), mail.WithFileContentType(mail.ContentType(mediaType))); err != nil {
		return nil, fmt.Errorf("attaching the body: %w", err)
	}
	return msg, nil
}

// attachmentName is the file name a body of mediaType is attached under: the kind, made safe,
// with an extension for the type ("digest.json" for application/fhir+json).
func attachmentName(kind, mediaType string) string {
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, kind)
	ext := ".bin"
	switch {
	case strings.HasSuffix(mediaType, "+json") || mediaType == "application/json":
		ext = ".json"
	case strings.HasSuffix(mediaType, "+xml") || strings.HasSuffix(mediaType, "/xml"):
		ext = ".xml"
	default:
		if exts, _ := mime.ExtensionsByType(mediaType); len(exts) > 0 {
			ext = exts[0]
		}
	}
	return base + ext
}
