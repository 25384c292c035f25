package followup

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/outbox"
)

// DigestConfig says where coordinators' digests go. With neither a webhook nor e-mail, notices
// are still marked as told, so turning delivery on later does not flood anyone with history.
type DigestConfig struct {
	// Webhook receives every owner's digest as a FHIR Bundle (header X-Cartreg-Owner names the
	// owner); "" for none.
	Webhook string
	// Email also sends each owner a text digest at the e-mail address of the owner resource
	// (Practitioner, PractitionerRole or Organization telecom), where it has one.
	Email bool
	// BaseURL is the FHIR base URL the Bundle's fullUrls are made from; urn:uuid: ones without.
	BaseURL string
}

// DigestIdentifierSystem names a digest Bundle by its idempotency key.
const DigestIdentifierSystem = IdentifierSystem + "-digest"

// Digests queues, in one transaction, a digest for each owner with Tasks they have not been
// told of (new, or newly overdue): a FHIR Bundle of those Tasks. The deliverer then sends
// them, retrying until the receiver takes them. A run that dies before this leaves its
// notices for the next. It returns how many digests were queued.
func (s *Tracker) Digests(ctx context.Context, at time.Time, cfg DigestConfig) (int, error) {
	queued := 0
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		queued = 0
		if cfg.Webhook == "" && !cfg.Email {
			if _, err := tx.Exec(ctx, toldSQL, at.UTC().Format(time.RFC3339)); err != nil {
				return fmt.Errorf("follow-up digests: %w", err)
			}
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT DISTINCT owner FROM followup_notice WHERE digest_key IS NULL ORDER BY owner`)
		if err != nil {
			return fmt.Errorf("follow-up digests: %w", err)
		}
		owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("follow-up digests: %w", err)
		}
		for _, owner := range owners {
			n, err := s.digest(ctx, tx, at, owner, cfg)
			if err != nil {
				return err
			}
			queued += n
		}
		return nil
	})
	return queued, err
}

// digestTask is one Task a digest tells of: its JSON as stored, for the Bundle, and the few
// elements the e-mail shows, decoded alone (a whole Task decoded into maps, for every Task
// of an owner's digest, was most of a first run's peak memory at 100,000 infusions).
type digestTask struct {
	id, patientName string
	reasons         []string
	fields          digestFields
	raw             json.RawMessage
}

// digestFields are the elements of a Task a digest reads. A Task is stored validated, so
// each has the type decoded here.
type digestFields struct {
	Status string `json:"status"`
	Code   struct {
		Coding []struct {
			Display string `json:"display"`
		} `json:"coding"`
	} `json:"code"`
	Restriction struct {
		Period struct {
			Start string `json:"start"`
			End   string `json:"end"`
		} `json:"period"`
	} `json:"restriction"`
}

// digestTasksSQL marks an owner's pending notices ($1) as told by the digest $2 and returns
// their Tasks' current versions, with the reasons and each Task's patient (its Patient
// resource's current version, if the registry has one).
//
// Each notice's Task and patient are looked up by key, the current version being the latest
// in resource_version (a deletion's body is NULL): resource has an index on the type alone, which a planner whose statistics predate the run's Tasks finds as
// good as the key, and then reads every Task for each notice. Planned as a join on those
// statistics, PostgreSQL also hashed all of followup_task for each owner. At 30,000
// infusions one owner's digest of 4,041 Tasks took 129 s; at 100,000, over 5 minutes.
const digestTasksSQL = `WITH told AS (
	UPDATE followup_notice SET digest_key = $2 WHERE owner = $1 AND digest_key IS NULL RETURNING task_id, reason
), notice AS (
	SELECT task_id, array_agg(reason ORDER BY reason) AS reasons FROM told GROUP BY task_id
)
SELECT n.task_id, n.reasons, task.body, patient.body
FROM notice n
JOIN LATERAL (SELECT ft.patient_id FROM followup_task ft WHERE ft.task_id = n.task_id OFFSET 0) ft ON true
JOIN LATERAL (SELECT v.body FROM resource_version v WHERE v.resource_type = 'Task' AND v.resource_id = n.task_id
	ORDER BY v.version_id DESC LIMIT 1) task ON task.body IS NOT NULL
LEFT JOIN LATERAL (SELECT v.body FROM resource_version v WHERE v.resource_type = 'Patient' AND v.resource_id = ft.patient_id
	ORDER BY v.version_id DESC LIMIT 1) patient ON true
ORDER BY n.task_id`

// toldSQL marks every pending notice as told, when there is nowhere to send digests.
const toldSQL = `UPDATE followup_notice SET digest_key = 'digest/' || owner || '/' || $1 WHERE digest_key IS NULL`

// digest queues owner's digest. With nowhere to send it (no webhook, no e-mail) the notices
// are marked as told by Digests without reading their Tasks.
func (s *Tracker) digest(ctx context.Context, tx pgx.Tx, at time.Time, owner string, cfg DigestConfig) (int, error) {
	key := "digest/" + owner + "/" + at.UTC().Format(time.RFC3339)
	rows, err := tx.Query(ctx, digestTasksSQL, owner, key)
	if err != nil {
		return 0, fmt.Errorf("follow-up digest for %s: %w", owner, err)
	}
	defer rows.Close()
	var tasks []digestTask
	for rows.Next() {
		var d digestTask
		var task string
		var patient *string // the registry may hold no Patient resource for the id
		if err := rows.Scan(&d.id, &d.reasons, &task, &patient); err != nil {
			return 0, fmt.Errorf("follow-up digest for %s: %w", owner, err)
		}
		if err := json.Unmarshal([]byte(task), &d.fields); err != nil {
			return 0, fmt.Errorf("follow-up digest: Task/%s: %w", d.id, err)
		}
		if !slices.Contains(OpenStatuses, d.fields.Status) {
			continue // closed since it was noticed: nothing to do
		}
		d.raw = json.RawMessage(task)
		patientJSON := "{}"
		if patient != nil {
			patientJSON = *patient
		}
		d.patientName = cmp.Or(patientOf("", &patientJSON).Name, "(no name)")
		tasks = append(tasks, d)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("follow-up digest for %s: %w", owner, err)
	}
	rows.Close()
	if len(tasks) == 0 {
		return 0, nil
	}
	var msgs []outbox.Message
	if cfg.Webhook != "" {
		bundle, err := digestBundle(at, key, tasks, cfg.BaseURL)
		if err != nil {
			return 0, err
		}
		msgs = append(msgs, outbox.Message{Key: key + "/webhook", Kind: "digest", Channel: outbox.ChannelWebhook,
			Target: cfg.Webhook, ContentType: "application/fhir+json", Body: bundle,
			Headers: map[string]string{"X-Cartreg-Owner": owner}})
	}
	if cfg.Email {
		address, err := s.ownerEmail(ctx, tx, owner)
		if err != nil {
			return 0, err
		}
		if address != "" {
			msgs = append(msgs, outbox.Message{Key: key + "/email", Kind: "digest", Channel: outbox.ChannelEmail,
				Target: address, ContentType: "text/plain; charset=utf-8", Subject: digestSubject(tasks),
				Body: []byte(digestText(tasks))})
		}
	}
	if err := outbox.EnqueueAt(ctx, tx, at, msgs...); err != nil {
		return 0, fmt.Errorf("follow-up digest for %s: %w", owner, err)
	}
	return len(msgs), nil
}

func digestBundle(at time.Time, key string, tasks []digestTask, base string) ([]byte, error) {
	entries := make([]any, len(tasks))
	for i, t := range tasks {
		fullURL := "urn:uuid:" + t.id
		if base != "" {
			fullURL = strings.TrimSuffix(base, "/") + "/Task/" + t.id
		}
		entries[i] = map[string]any{"fullUrl": fullURL, "resource": t.raw}
	}
	return json.Marshal(map[string]any{
		"resourceType": "Bundle",
		"identifier":   map[string]any{"system": DigestIdentifierSystem, "value": key},
		"type":         "collection",
		"timestamp":    at.UTC().Format(time.RFC3339),
		"entry":        entries,
	})
}

func digestSubject(tasks []digestTask) string {
	overdue := 0
	for _, t := range tasks {
		if slices.Contains(t.reasons, "overdue") {
			overdue++
		}
	}
	if overdue > 0 {
		return fmt.Sprintf("CAR-T follow-up: %d overdue, %d new", overdue, len(tasks)-overdue)
	}
	return fmt.Sprintf("CAR-T follow-up: %d new", len(tasks))
}

// digestText is the e-mail: overdue visits first, then the new ones by window.
func digestText(tasks []digestTask) string {
	sorted := append([]digestTask(nil), tasks...)
	window := func(t digestTask) string {
		return t.fields.Restriction.Period.Start + " to " + t.fields.Restriction.Period.End
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		oi, oj := slices.Contains(sorted[i].reasons, "overdue"), slices.Contains(sorted[j].reasons, "overdue")
		if oi != oj {
			return oi
		}
		return window(sorted[i]) < window(sorted[j])
	})
	var b strings.Builder
	b.WriteString("Follow-up visits that need you, from the CAR-T registry:\n\n")
	for _, t := range sorted {
		label := "NEW    "
		if slices.Contains(t.reasons, "overdue") {
			label = "OVERDUE"
		}
		milestone := ""
		if codings := t.fields.Code.Coding; len(codings) > 0 {
			milestone = codings[0].Display
		}
		fmt.Fprintf(&b, "%s  %s: %s, window %s (Task/%s)\n", label, milestone, t.patientName, window(t), t.id)
	}
	b.WriteString("\nThe worklist has the rest: GET /worklist.\n")
	return b.String()
}

// ownerEmail is the first e-mail address on the owner resource, or "" when it has none or
// does not exist here.
func (s *Tracker) ownerEmail(ctx context.Context, tx pgx.Tx, owner string) (string, error) {
	typ, id, ok := strings.Cut(owner, "/")
	if !ok {
		return "", nil
	}
	v, err := s.store.Read(ctx, tx, typ, id)
	var missing *fhir.Outcome
	if errors.As(err, &missing) {
		return "", nil // not found or deleted: nobody to write to
	}
	if err != nil {
		return "", fmt.Errorf("owner %s: %w", owner, err)
	}
	var res struct {
		Telecom []struct{ System, Value string }
	}
	if err := json.Unmarshal(v.JSON, &res); err != nil {
		return "", fmt.Errorf("owner %s: %w", owner, err)
	}
	for _, t := range res.Telecom {
		if t.System == "email" && t.Value != "" {
			return t.Value, nil
		}
	}
	return "", nil
}
