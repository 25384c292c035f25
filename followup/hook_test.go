package followup_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

// put replaces a resource through a transaction Bundle, as an EHR would.
func (w *world) put(body map[string]any) {
	w.t.Helper()
	url := body["resourceType"].(string) + "/" + body["id"].(string)
	raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
		map[string]any{"resource": body, "request": map[string]any{"method": "PUT", "url": url}}}})
	if _, err := w.api.ProcessBundle(context.Background(), raw, ""); err != nil {
		w.t.Fatalf("PUT %s: %v", url, err)
	}
}

// The writes that end a visit close its Task at once, without waiting for the next run.
func TestWritesCloseTasksAtOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	planner := w.h.App.FollowUp
	site := w.post(map[string]any{"resourceType": "Organization", "name": "Riverside Cancer Centre"})[0]
	const day0 = "2025-03-03"
	w.now = date(day0)
	assessed, _, assessedInf := w.enrol(site, day0)
	dying, _, dyingInf := w.enrol(site, day0)
	withdrawing, _, withdrawingInf := w.enrol(site, day0)
	held, _, heldInf := w.enrol(site, day0)

	w.now = date("2025-03-28") // day 25: month 1 due, nothing else yet
	if _, err := planner.Run(ctx, w.now); err != nil {
		t.Fatal(err)
	}
	for _, inf := range []string{assessedInf, dyingInf, withdrawingInf, heldInf} {
		if got := w.tasks(inf); len(got) != 1 || got["m1"].business != followup.Due {
			t.Fatalf("%s on day 25: %+v, want month 1 due", inf, got)
		}
	}

	t.Run("an assessment completes its Task", func(t *testing.T) {
		obs := w.assess(assessed, assessedInf, "2025-04-01", "lugano-cmr")
		got := w.tasks(assessedInf)["m1"]
		if got.status != "completed" || got.output != obs || got.business != "" {
			t.Errorf("month 1 after the assessment %s: %+v", obs, got)
		}
	})

	t.Run("a death cancels the open Task", func(t *testing.T) {
		w.die(dying, site, "2025-03-30")
		if got := w.tasks(dyingInf)["m1"]; got.status != "cancelled" {
			t.Errorf("month 1 after the death: %+v", got)
		}
	})

	t.Run("a finished follow-up episode is a withdrawal", func(t *testing.T) {
		episode := map[string]any{"resourceType": "EpisodeOfCare", "id": "withdrawal-1", "status": "active",
			"type":    []any{cc(registry.SystemCartreg, followup.CodeFollowUpEpisode)},
			"patient": ref(withdrawing), "period": map[string]any{"start": day0}}
		w.put(episode)
		if got := w.tasks(withdrawingInf)["m1"]; got.status != "requested" {
			t.Fatalf("an active episode changes nothing: %+v", got)
		}
		episode["status"] = "finished"
		episode["period"] = map[string]any{"start": day0, "end": "2025-03-29"}
		w.put(episode)
		if got := w.tasks(withdrawingInf)["m1"]; got.status != "cancelled" {
			t.Errorf("month 1 after the withdrawal: %+v", got)
		}
	})

	t.Run("an assessment completes a Task a coordinator put on hold, keeping their note", func(t *testing.T) {
		task := w.tasks(heldInf)["m1"]
		body := w.current("Task", task.id)
		body["status"] = "on-hold"
		body["statusReason"] = map[string]any{"text": "patient in hospital elsewhere"}
		body["note"] = []any{map[string]any{"text": "call Dr Mbeki on Friday"}}
		w.put(body)
		obs := w.assess(held, heldInf, "2025-04-02", "lugano-pmr")
		after := w.current("Task", task.id)
		if after["status"] != "completed" || after["statusReason"] != nil || after["note"] == nil ||
			w.tasks(heldInf)["m1"].output != obs {
			t.Errorf("the coordinator's Task after the assessment: %v", after)
		}
	})

	// Months later, the scheduled run makes new Tasks for the living, followed patients only.
	w.now = date("2025-05-25") // month 3 window opens on day 76 (2025-05-18)
	if _, err := planner.Run(ctx, w.now); err != nil {
		t.Fatal(err)
	}
	for inf, want := range map[string]int{assessedInf: 2, heldInf: 2, dyingInf: 1, withdrawingInf: 1} {
		if got := w.tasks(inf); len(got) != want {
			t.Errorf("%s: %d Tasks, want %d: %+v", inf, len(got), want, got)
		}
	}

	t.Run("an episode set back to active resumes follow-up", func(t *testing.T) {
		w.put(map[string]any{"resourceType": "EpisodeOfCare", "id": "withdrawal-1", "status": "active",
			"type":    []any{cc(registry.SystemCartreg, followup.CodeFollowUpEpisode)},
			"patient": ref(withdrawing), "period": map[string]any{"start": day0}})
		if _, err := planner.Run(ctx, w.now); err != nil {
			t.Fatal(err)
		}
		got := w.tasks(withdrawingInf)
		if len(got) != 2 || got["m3"].business != followup.Due || got["m1"].business != followup.Overdue {
			t.Errorf("after follow-up resumed: %+v", got)
		}
	})
}

// current is the current version of a resource, without meta.
func (w *world) current(resourceType, id string) map[string]any {
	w.t.Helper()
	v, err := w.store.Read(context.Background(), w.db, resourceType, id)
	if err != nil {
		w.t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(v.JSON, &body); err != nil {
		w.t.Fatal(err)
	}
	delete(body, "meta")
	return body
}

// Lost to follow-up ends follow-up as a withdrawal does, and says so: the open Task is
// cancelled with its own reason, no new Task comes, and the patient's follow-up reads "lost to
// follow-up", not "withdrawn".
func TestLostToFollowUpEndsFollowUpAndSaysSo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	site := w.post(map[string]any{"resourceType": "Organization", "name": "Riverside Cancer Centre"})[0]
	const day0 = "2025-03-03"
	w.now = date(day0)
	lost, _, lostInf := w.enrol(site, day0)
	w.now = date("2025-03-28")
	if _, err := w.h.App.FollowUp.Run(ctx, w.now); err != nil {
		t.Fatal(err)
	}
	w.put(map[string]any{"resourceType": "EpisodeOfCare", "id": "lost-1", "status": "finished",
		"type":    []any{cc(registry.SystemCartreg, followup.CodeFollowUpEpisode), cc(registry.SystemCartreg, followup.CodeLostToFollowUp)},
		"patient": ref(lost), "period": map[string]any{"start": day0, "end": "2025-03-28"}})
	task := w.tasks(lostInf)["m1"]
	if task.status != "cancelled" {
		t.Fatalf("month 1 once lost to follow-up: %+v", task)
	}
	if reason := w.current("Task", task.id)["statusReason"]; reason == nil || reason.(map[string]any)["text"] != followup.ReasonLost {
		t.Errorf("statusReason %v, want %q", reason, followup.ReasonLost)
	}
	w.now = date("2026-03-28") // a year on: month 3 and year 1 would be overdue
	if _, err := w.h.App.FollowUp.Run(ctx, w.now); err != nil {
		t.Fatal(err)
	}
	if got := w.tasks(lostInf); len(got) != 1 {
		t.Errorf("a year after being lost: %d Tasks, want the one cancelled: %+v", len(got), got)
	}
	st, ok, err := w.h.App.FollowUp.Status(ctx, w.db, lost[len("Patient/"):], w.now)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if st.Sequences[0].State != followup.StateLost {
		t.Errorf("state %q, want %q", st.Sequences[0].State, followup.StateLost)
	}
}
