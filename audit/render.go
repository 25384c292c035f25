package audit

import (
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Code systems and extensions the rendered AuditEvents use. Those under cartreg.org are the
// server's own: R4 has no codes for how an agent authenticated or for a request id.
const (
	SystemAuditEventType     = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	SystemRestfulInteraction = "http://hl7.org/fhir/restful-interaction"
	SystemDICOM              = "http://dicom.nema.org/resources/ontology/DCM"
	SystemSourceType         = "http://terminology.hl7.org/CodeSystem/security-source-type"
	SystemEntityType         = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	SystemObjectRole         = "http://terminology.hl7.org/CodeSystem/object-role"
	SystemAgentKind          = "http://cartreg.org/fhir/CodeSystem/audit-agent-kind"
	SystemRole               = "http://cartreg.org/fhir/CodeSystem/role"
	SystemClient             = "urn:cartreg:client"
	SystemUser               = "urn:cartreg:user"
	SystemOperator           = "urn:cartreg:operator"
	ExtensionRequestID       = "http://cartreg.org/fhir/StructureDefinition/audit-request-id"
	ExtensionRequest         = "http://cartreg.org/fhir/StructureDefinition/audit-request"
	ExtensionAgentSite       = "http://cartreg.org/fhir/StructureDefinition/audit-agent-site"
)

// ObserverReference is the Device the AuditEvents name as their observer: this server.
const ObserverReference = "Device/cartreg"

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type concept struct {
	Coding []coding `json:"coding"`
	Text   string   `json:"text,omitempty"`
}

type identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value"`
}

type reference struct {
	Reference  string      `json:"reference,omitempty"`
	Identifier *identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

type extension struct {
	URL         string `json:"url"`
	ValueString string `json:"valueString,omitempty"`
}

type network struct {
	Address string `json:"address"`
	Type    string `json:"type"`
}

type agent struct {
	Extension []extension `json:"extension,omitempty"`
	Type      *concept    `json:"type,omitempty"`
	Role      []concept   `json:"role,omitempty"`
	Who       *reference  `json:"who,omitempty"`
	Name      string      `json:"name,omitempty"`
	Requestor bool        `json:"requestor"`
	Network   *network    `json:"network,omitempty"`
}

type source struct {
	Site     string    `json:"site,omitempty"`
	Observer reference `json:"observer"`
	Type     []coding  `json:"type"`
}

type entity struct {
	Extension   []extension `json:"extension,omitempty"`
	What        *reference  `json:"what,omitempty"`
	Type        *coding     `json:"type,omitempty"`
	Role        *coding     `json:"role,omitempty"`
	Description string      `json:"description,omitempty"`
	Query       string      `json:"query,omitempty"`
}

type meta struct {
	LastUpdated string `json:"lastUpdated"`
}

// auditEvent is an R4 AuditEvent in FHIR JSON.
type auditEvent struct {
	ResourceType string      `json:"resourceType"`
	ID           string      `json:"id"`
	Meta         meta        `json:"meta"`
	Extension    []extension `json:"extension,omitempty"`
	Type         coding      `json:"type"`
	Subtype      []coding    `json:"subtype,omitempty"`
	Action       string      `json:"action,omitempty"`
	Recorded     string      `json:"recorded"`
	Outcome      string      `json:"outcome"`
	OutcomeDesc  string      `json:"outcomeDesc,omitempty"`
	Agent        []agent     `json:"agent"`
	Source       source      `json:"source"`
	Entity       []entity    `json:"entity,omitempty"`
}

// OutcomeCode is the AuditEvent outcome of an HTTP status: 0 success (2xx and 3xx), 4 minor
// failure (the client's: 4xx), 8 serious failure (the server's: 5xx).
func OutcomeCode(status int) string {
	switch {
	case status >= 500:
		return "8"
	case status >= 400:
		return "4"
	}
	return "0"
}

// render is ev as an R4 AuditEvent.
func render(ev Event) auditEvent {
	recorded := ev.Time.UTC().Format(time.RFC3339Nano)
	ae := auditEvent{
		ResourceType: "AuditEvent",
		ID:           ev.ID,
		Meta:         meta{LastUpdated: recorded},
		Type:         coding{System: SystemAuditEventType, Code: "rest", Display: "RESTful Operation"},
		Action:       ev.Action,
		Recorded:     recorded,
		Outcome:      OutcomeCode(ev.Outcome),
		Source: source{
			Site:     "cartreg",
			Observer: reference{Reference: ObserverReference, Display: "cartreg FHIR server"},
			Type:     []coding{{System: SystemSourceType, Code: "4", Display: "Application Server"}},
		},
	}
	if ev.Interaction == "login" {
		ae.Type = coding{System: SystemDICOM, Code: "110114", Display: "User Authentication"}
		ae.Subtype = []coding{{System: SystemDICOM, Code: "110122", Display: "Login"}}
	} else if ev.Interaction != "" {
		ae.Subtype = []coding{{System: SystemRestfulInteraction, Code: ev.Interaction}}
	}
	if !validAction(ev.Action) {
		ae.Action = ""
	}
	if ev.RequestID != "" {
		ae.Extension = append(ae.Extension, extension{URL: ExtensionRequestID, ValueString: ev.RequestID})
	}
	if ev.Method != "" || ev.Path != "" {
		ae.Extension = append(ae.Extension, extension{URL: ExtensionRequest, ValueString: strings.TrimSpace(ev.Method + " " + ev.Path)})
	}
	if ev.Outcome >= 400 {
		ae.OutcomeDesc = ev.OutcomeText
		if ae.OutcomeDesc == "" {
			ae.OutcomeDesc = http.StatusText(ev.Outcome)
		}
		if ae.OutcomeDesc == "" {
			ae.OutcomeDesc = "HTTP status " + strconv.Itoa(ev.Outcome)
		}
	} else {
		ae.OutcomeDesc = ev.OutcomeText
	}
	ae.Agent = []agent{renderAgent(ev)}
	for _, ref := range ev.Entities {
		role := coding{System: SystemObjectRole, Code: "4", Display: "Domain Resource"}
		if strings.HasPrefix(ref, "Patient/") {
			role = coding{System: SystemObjectRole, Code: "1", Display: "Patient"}
		}
		ae.Entity = append(ae.Entity, entity{
			What: &reference{Reference: ref},
			Type: &coding{System: SystemEntityType, Code: "2", Display: "System Object"},
			Role: &role,
		})
	}
	if ev.Query != "" {
		ae.Entity = append(ae.Entity, entity{
			Type:        &coding{System: SystemEntityType, Code: "2", Display: "System Object"},
			Role:        &coding{System: SystemObjectRole, Code: "24", Display: "Query"},
			Description: strings.TrimSpace(ev.Method + " " + ev.Path),
			Query:       base64.StdEncoding.EncodeToString([]byte(ev.Query)),
		})
	}
	return ae
}

func renderAgent(ev Event) agent {
	a := ev.Agent
	out := agent{
		Type:      &concept{Coding: []coding{{System: SystemAgentKind, Code: a.Kind}}},
		Name:      a.Name,
		Requestor: true,
	}
	if a.Role != "" {
		out.Role = []concept{{Coding: []coding{{System: SystemRole, Code: a.Role}}}}
	}
	if a.Who != "" {
		system := SystemClient
		switch a.Kind {
		case KindUser:
			system = SystemUser
			if a.Issuer != "" {
				system = a.Issuer
			}
		case KindOperator:
			system = SystemOperator
		}
		out.Who = &reference{Identifier: &identifier{System: system, Value: a.Who}, Display: a.Name}
	} else if a.Kind == KindAnonymous {
		out.Who = &reference{Display: "anonymous"}
	}
	for _, site := range a.Sites {
		out.Extension = append(out.Extension, extension{URL: ExtensionAgentSite, ValueString: site})
	}
	if ev.Source != "" {
		kind := "1" // machine name
		if net.ParseIP(ev.Source) != nil {
			kind = "2" // IP address
		}
		out.Network = &network{Address: ev.Source, Type: kind}
	}
	return out
}

func validAction(a string) bool {
	switch a {
	case "C", "R", "U", "D", "E":
		return true
	}
	return false
}
