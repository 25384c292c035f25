// Package followup keeps one FHIR Task per infusion and milestone of the follow-up plan: the
// visits coordinators must not miss.
//
// # Derived, not incremental
//
// A run (Tracker.Run, the "follow-up" job of package schedules) derives what should exist
// from the registry's projection and makes it so, changing only what differs: a missed run is
// caught up by the next, a repeated run writes nothing. For every infusion and milestone whose
// lead time has begun there is a Task: requested while the visit is sought, with
// businessStatus upcoming, due or overdue by the window (Task.restriction.period); completed,
// with the assessment as output, once an assessment counts at that milestone; cancelled once
// the patient has died, withdrawn, or started a new sequence with another infusion. The key
// (infusion, milestone) of followup_task makes a second Task for a visit impossible, whichever
// replica runs and however often.
//
// # Coordinators' changes
//
// Tasks are ordinary, versioned FHIR resources; coordinators accept them, put them on hold or
// fail them through the API. followup_task remembers the version the scheduler last wrote: a
// later version is a coordinator's, and the scheduler leaves it alone, except that the end of
// the visit still reaches it (an assessment completes an open Task, a death or withdrawal
// cancels one), applied on top of the coordinator's version so their notes and owner stay.
//
// # At write time
//
// Hook is a store write hook run after the registry's projection: the write that records an
// assessment, a death, a withdrawal or a new infusion brings that patient's existing Tasks up
// to date in its own transaction, so a visit done an hour ago is never shown as due. It makes
// no new Tasks; those wait for the scheduled run.
//
// # Withdrawal is an EpisodeOfCare
//
// A patient's withdrawal from follow-up is recorded as an EpisodeOfCare with type
// cartreg#car-t-follow-up (the registry's CodeSystem) whose status is finished or cancelled;
// period.end is the date. EpisodeOfCare rather than ResearchSubject because a registry's
// follow-up is care the hospital gives, not enrolment in a study, EHRs already keep
// EpisodeOfCare for such programmes, and its status says exactly "this episode of care is
// over". Setting the episode back to active resumes follow-up. Lost to follow-up is such an
// episode with the second type cartreg#lost-to-follow-up: follow-up ends the same way, but
// the cancelled Tasks and the patient's Status say the patient was lost rather than withdrew.
//
// # The work list reads followup_task
//
// A site's page of the work list must not cost the registry's every open Task, so
// followup_task carries what the list filters and orders by: the current Task version's
// status, owner and window (restriction.period), and the infusion's site. The scheduler
// records them as it writes a Task; the write hook records them for any other write of a
// follow-up Task (a coordinator's status, owner or window through the FHIR API or the web
// pages, a deletion) in that write's transaction, and a run or a write that moves an
// infusion to another site files its Tasks under the new one. Worklist.List is then an index
// scan of (current_status, site_id), ordered by urgency in the database, and reads and parses
// only the Tasks and patients of the page it returns. The same row keeps the current
// version's number (current_version), which a scheduler run compares with the version it
// wrote (written_version) to tell a coordinator's Task from its own without reading either. A list of every site (an
// administrator's) is read a page per urgency: urgency is the window against today, so each
// urgency's first rows are a range of the index on (current_status, window_end,
// window_start), read in order with a LIMIT, and the counts come from that index alone; the
// few Tasks whose window it cannot place (none of their own, or an end before the start) are
// read through a partial index of their own. A search by name or MRN finds its patients first,
// by prefix in the FHIR search index, and the list is filtered by their ids.
//
// # Telling coordinators
//
// A Task that is new, or newly overdue, leaves a notice (followup_notice) in the same
// transaction; after the run, Digests turns each owner's notices into one digest, a FHIR
// Bundle of their Tasks for a webhook and a text for e-mail, queued in the delivery outbox
// (package outbox), which retries until the receiver takes it. The Worklist serves the same
// Tasks on demand as JSON, CSV and an iCalendar feed; Status shows one patient's follow-up and
// the last milestone reached alive and progression-free.
package followup
