package outbox_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// mailbox is an in-process SMTP server on loopback that keeps what it is sent.
type mailbox struct {
	addr *net.TCPAddr

	mu    sync.Mutex
	mails []receivedMail
}

type receivedMail struct {
	from string
	to   []string
	data []byte
}

func newMailbox(t *testing.T) *mailbox {
	t.Helper()
	mb := &mailbox{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{mb: mb}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.addr = ln.Addr().(*net.TCPAddr)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return mb
}

func (mb *mailbox) Mails() []receivedMail {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return append([]receivedMail(nil), mb.mails...)
}

type smtpSession struct {
	mb  *mailbox
	cur receivedMail
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.cur.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "nobody@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	s.cur.to = append(s.cur.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = data
	s.mb.mu.Lock()
	s.mb.mails = append(s.mb.mails, s.cur)
	s.mb.mu.Unlock()
	s.cur = receivedMail{}
	return nil
}

func (s *smtpSession) Reset()        { s.cur = receivedMail{} }
func (s *smtpSession) Logout() error { return nil }

// decoded returns a MIME part's content with its transfer encoding undone.
func decoded(t *testing.T, encoding string, r io.Reader) string {
	t.Helper()
	switch strings.ToLower(encoding) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEmailArrivesOverSMTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	mb := newMailbox(t)
	d := outbox.New(db, outbox.Config{SMTP: outbox.SMTPConfig{
		Host: mb.addr.IP.String(), Port: mb.addr.Port, TLS: outbox.TLSNone,
		From: "cartreg <registry@site.example>",
	}}, clk.Now, quiet)

	digest := outbox.Message{Key: "digest:c1:2025-03-14", Kind: "digest", Channel: outbox.ChannelEmail,
		Target: "Coordinator One <one@site.example>, two@site.example", Subject: "Follow-up due this week",
		ContentType: "application/fhir+json", Body: []byte(`{"resourceType":"Bundle","type":"collection"}`)}
	note := outbox.Message{Key: "note:1", Kind: "note", Channel: outbox.ChannelEmail,
		Target: "three@site.example", Subject: "Plain note", ContentType: "text/plain; charset=utf-8",
		Body: []byte("Patient list — see the registry.\n")}
	enqueue(t, db, t0, digest, note)

	if pass, err := d.DeliverDue(ctx); err != nil || pass.Delivered != 2 {
		t.Fatalf("pass: %+v, %v", pass, err)
	}
	mails := mb.Mails()
	if len(mails) != 2 {
		t.Fatalf("the server got %d mails, want 2", len(mails))
	}
	for _, rm := range mails {
		if rm.from != "registry@site.example" {
			t.Errorf("MAIL FROM %q", rm.from)
		}
	}

	// The digest: a short text, and the Bundle attached as digest.json.
	rm := mails[0]
	if strings.Join(rm.to, ",") != "one@site.example,two@site.example" {
		t.Errorf("RCPT TO %v", rm.to)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(rm.data))
	if err != nil {
		t.Fatal(err)
	}
	to, err := msg.Header.AddressList("To")
	if err != nil || len(to) != 2 || to[0].Name != "Coordinator One" || to[0].Address != "one@site.example" || to[1].Address != "two@site.example" {
		t.Errorf("To: %v (%v)", to, err)
	}
	from, err := msg.Header.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "registry@site.example" {
		t.Errorf("From: %v (%v)", from, err)
	}
	if got := msg.Header.Get("Subject"); got != digest.Subject {
		t.Errorf("Subject: %q", got)
	}
	if got := msg.Header.Get(outbox.HeaderDelivery); got != digest.Key {
		t.Errorf("%s: %q", outbox.HeaderDelivery, got)
	}
	if date, err := msg.Header.Date(); err != nil || !date.Equal(t0) {
		t.Errorf("Date: %v (%v), want the clock's %s", date, err, t0)
	}
	if msg.Header.Get("Message-Id") == "" {
		t.Error("no Message-ID")
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/mixed" {
		t.Fatalf("Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}
	parts := multipart.NewReader(msg.Body, params["boundary"])
	var text, attached, filename string
	for {
		p, err := parts.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		content := decoded(t, p.Header.Get("Content-Transfer-Encoding"), p)
		if p.FileName() != "" {
			filename, attached = p.FileName(), content
			if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("attachment Content-Type %q", ct)
			}
		} else {
			text = content
		}
	}
	if filename != "digest.json" || attached != string(digest.Body) {
		t.Errorf("attachment %q: %q", filename, attached)
	}
	if !strings.Contains(text, "digest.json") {
		t.Errorf("text part %q does not name the attachment", text)
	}

	// The note: its body is the mail's text.
	rm = mails[1]
	if strings.Join(rm.to, ",") != "three@site.example" {
		t.Errorf("RCPT TO %v", rm.to)
	}
	msg, err = mail.ReadMessage(bytes.NewReader(rm.data))
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("Subject"); got != note.Subject {
		t.Errorf("Subject: %q", got)
	}
	if !strings.HasPrefix(msg.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("Content-Type %q", msg.Header.Get("Content-Type"))
	}
	if body := decoded(t, msg.Header.Get("Content-Transfer-Encoding"), msg.Body); strings.TrimRight(body, "\r\n") != strings.TrimRight(string(note.Body), "\n") {
		t.Errorf("body %q, want %q", body, note.Body)
	}
	for _, key := range []string{digest.Key, note.Key} {
		if as := attempts(t, db, key); len(as) != 1 || !as[0].OK {
			t.Errorf("%s attempts: %+v", key, as)
		}
	}
}

func TestEmailFailuresAreRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	clk := &clock{now: t0}
	mb := newMailbox(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	rejected := outbox.Message{Key: "rejected", Kind: "digest", Channel: outbox.ChannelEmail,
		Target: "nobody@site.example", Subject: "s", Body: []byte("b")}
	unreachable := rejected
	unreachable.Key = "unreachable"
	offline := rejected
	offline.Key = "offline"

	for _, tc := range []struct {
		msg    outbox.Message
		smtp   outbox.SMTPConfig
		status int
		error  string
	}{
		{rejected, outbox.SMTPConfig{Host: "127.0.0.1", Port: mb.addr.Port, TLS: outbox.TLSNone, From: "r@site.example"}, 550, "no such mailbox"},
		{unreachable, outbox.SMTPConfig{Host: "127.0.0.1", Port: closedPort, TLS: outbox.TLSNone, From: "r@site.example"}, 0, "refused"},
		{offline, outbox.SMTPConfig{}, 0, "no SMTP host"},
	} {
		enqueue(t, db, t0, tc.msg)
		d := outbox.New(db, outbox.Config{SMTP: tc.smtp}, clk.Now, quiet)
		if pass, err := d.DeliverDue(ctx); err != nil || pass != (outbox.Pass{Retrying: 1}) {
			t.Fatalf("%s: pass %+v, %v", tc.msg.Key, pass, err)
		}
		as := attempts(t, db, tc.msg.Key)
		if len(as) != 1 || as[0].OK || as[0].Status != tc.status || !strings.Contains(as[0].Error, tc.error) {
			t.Errorf("%s: attempts %+v, want status %d and an error with %q", tc.msg.Key, as, tc.status, tc.error)
		}
		if st := status(t, db, tc.msg.Key); st.State != outbox.StatePending || st.LastError != as[0].Error {
			t.Errorf("%s: status %+v", tc.msg.Key, st)
		}
	}
	if n := len(mb.Mails()); n != 0 {
		t.Errorf("the server accepted %d mails", n)
	}
}
