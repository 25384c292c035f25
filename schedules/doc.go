// Package schedules will hold the follow-up scheduler: a robfig/cron schedule inside
// `cartreg serve` that derives, from the registry, the follow-up Tasks each infusion is due
// (1 month, 3 months, then yearly), safe to run on several replicas at once, and the
// coordinators' work lists built from those Tasks.
//
// Nothing is implemented here yet; it arrives with the scheduler issue.
package schedules
