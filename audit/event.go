package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The kinds of agent.
const (
	KindClient    = "client"
	KindUser      = "user"
	KindOperator  = "operator"
	KindAnonymous = "anonymous"
)

// Agent is who made the request.
type Agent struct {
	// Kind is client, user, operator or anonymous.
	Kind string `json:"kind"`
	// Who is the client id or the user's subject.
	Who string `json:"who"`
	// Issuer is the OIDC issuer that vouches for a user's subject; empty for a client.
	Issuer string `json:"issuer,omitempty"`
	// Name is a display name.
	Name string `json:"name,omitempty"`
	// Role is the role the request was allowed under.
	Role string `json:"role,omitempty"`
	// Sites are the sites (Organization ids) the agent acts for.
	Sites []string `json:"sites,omitempty"`
}

// Event is one audited request. It carries no request body and no access token.
type Event struct {
	// ID is the AuditEvent's id, a UUID; the recorder assigns one when empty.
	ID string `json:"id"`
	// Time is when the request was answered; the recorder's clock when zero. Kept to the
	// microsecond, as PostgreSQL does.
	Time time.Time `json:"time"`
	// Action is the FHIR AuditEvent.action: C R U D or E; derived from Interaction when empty.
	Action string `json:"action"`
	// Interaction is a code of http://hl7.org/fhir/restful-interaction (read, vread,
	// search-type, search-system, history-instance, create, update, patch, delete,
	// transaction, batch, operation, …) or "login" for a token issued or refused.
	Interaction string `json:"interaction"`
	// Outcome is the HTTP status answered.
	Outcome int `json:"outcome"`
	// OutcomeText says briefly why a request failed; never patient data.
	OutcomeText string `json:"outcomeText,omitempty"`
	Agent       Agent  `json:"agent"`
	// Source is the client's IP address.
	Source    string `json:"source"`
	RequestID string `json:"requestId"`
	// Method, Path and Query are the request line; an access_token parameter is removed
	// from Query before it is stored.
	Method string `json:"method"`
	Path   string `json:"path"`
	Query  string `json:"query,omitempty"`
	// Entities are the references the request touched: "Patient/123", "Observation/9".
	Entities []string `json:"entities,omitempty"`
	// Patients are the ids of the patients the request concerned.
	Patients []string `json:"patients,omitempty"`
}

// ActionFor is the AuditEvent action of a restful interaction: C for create, R for reads,
// searches and histories, U for update and patch, D for delete, E for the rest.
func ActionFor(interaction string) string {
	switch interaction {
	case "create":
		return "C"
	case "read", "vread", "search-type", "search-system", "search-compartment",
		"history-instance", "history-type", "history-system", "capabilities":
		return "R"
	case "update", "patch":
		return "U"
	case "delete":
		return "D"
	}
	return "E"
}

// normalize gives ev the form it is stored and hashed in: every string valid UTF-8 without NUL
// (PostgreSQL's text and jsonb refuse NUL, and JSON would rewrite invalid bytes, so the hash
// taken before storing would not match the one recomputed from the stored row), the time in
// UTC to the microsecond, the access token out of the query.
func normalize(ev Event, now func() time.Time) Event {
	clean := func(s string) string {
		return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	}
	cleanAll := func(ss []string) []string {
		if len(ss) == 0 {
			return nil
		}
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = clean(s)
		}
		return out
	}
	if ev.Time.IsZero() {
		ev.Time = now()
	}
	ev.Time = ev.Time.UTC().Truncate(time.Microsecond)
	ev.ID = clean(ev.ID)
	ev.Interaction = clean(ev.Interaction)
	if ev.Action == "" {
		ev.Action = ActionFor(ev.Interaction)
	}
	ev.Action = clean(ev.Action)
	ev.OutcomeText = clean(ev.OutcomeText)
	ev.Agent.Kind = clean(ev.Agent.Kind)
	if ev.Agent.Kind == "" {
		ev.Agent.Kind = KindAnonymous
	}
	ev.Agent.Who = clean(ev.Agent.Who)
	ev.Agent.Issuer = clean(ev.Agent.Issuer)
	ev.Agent.Name = clean(ev.Agent.Name)
	ev.Agent.Role = clean(ev.Agent.Role)
	ev.Agent.Sites = cleanAll(ev.Agent.Sites)
	ev.Source = clean(ev.Source)
	ev.RequestID = clean(ev.RequestID)
	ev.Method = clean(ev.Method)
	ev.Path = clean(ev.Path)
	ev.Query = clean(StripAccessToken(ev.Query))
	ev.Entities = cleanAll(ev.Entities)
	ev.Patients = cleanAll(ev.Patients)
	return ev
}

// StripAccessToken removes every access_token parameter from a raw query string and leaves the
// rest as it was sent (order and escaping), since that is what was searched.
func StripAccessToken(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	kept := parts[:0]
	for _, p := range parts {
		key, _, _ := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		if strings.EqualFold(strings.TrimSpace(key), "access_token") {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "&")
}

// hashVersion starts every canonical encoding, so a future change of the encoding cannot be
// mistaken for this one.
const hashVersion = "cartreg-audit-event-v1"

// contentHash is SHA-256 over a canonical encoding of a normalised event: every field in a
// fixed order, each string prefixed by its length and each list by its count, so no two
// different events encode alike (no field can borrow bytes from its neighbour).
func contentHash(ev Event) []byte {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	num := func(n uint64) { h.Write(buf[:binary.PutUvarint(buf[:], n)]) }
	str := func(s string) { num(uint64(len(s))); h.Write([]byte(s)) }
	list := func(ss []string) {
		num(uint64(len(ss)))
		for _, s := range ss {
			str(s)
		}
	}
	str(hashVersion)
	str(ev.ID)
	str(ev.Time.UTC().Format(time.RFC3339Nano))
	str(ev.Action)
	str(ev.Interaction)
	str(strconv.Itoa(ev.Outcome))
	str(ev.OutcomeText)
	str(ev.Agent.Kind)
	str(ev.Agent.Who)
	str(ev.Agent.Issuer)
	str(ev.Agent.Name)
	str(ev.Agent.Role)
	list(ev.Agent.Sites)
	str(ev.Source)
	str(ev.RequestID)
	str(ev.Method)
	str(ev.Path)
	str(ev.Query)
	list(ev.Entities)
	list(ev.Patients)
	return h.Sum(nil)
}

// chainHash links a row to its predecessor in the chain.
func chainHash(prev, content []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(content)
	return h.Sum(nil)
}

// genesis is the chained hash before the first row.
var genesis = make([]byte, sha256.Size)
