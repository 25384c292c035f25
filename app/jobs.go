package app

import (
	"context"
	"time"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/outbox"
	"github.com/cartreg/cartreg/schedules"
)

// FollowUpJob is the scheduled follow-up run: Tasks brought up to date as of the slot, then
// each owner's digest queued.
func (a *App) FollowUpJob() schedules.Job {
	return schedules.Job{Name: "follow-up", Spec: a.Config.Jobs.FollowUpSchedule, Run: func(ctx context.Context, slot time.Time) error {
		ctx = auth.WithPrincipal(ctx, auth.Operator("cartreg follow-up scheduler"))
		started := time.Now()
		sum, err := a.FollowUp.Run(ctx, slot)
		if err != nil {
			return err
		}
		n, err := a.FollowUp.Digests(ctx, slot, a.Config.Jobs.Digests)
		if err != nil {
			return err
		}
		a.Logger.Info("follow-up run", "slot", slot, "tasks", sum.String(), "digests", n, "duration", time.Since(started).Round(time.Millisecond))
		return nil
	}}
}

// pruneSpec is when delivered messages past their retention are deleted: daily, before the
// follow-up run.
const pruneSpec = "15 4 * * *"

// PruneJob deletes delivered digests and notifications older than the retention: their bodies
// carry patient data that the outbox need not keep once a receiver has them.
func (a *App) PruneJob() schedules.Job {
	return schedules.Job{Name: "delivery-prune", Spec: pruneSpec, Run: func(ctx context.Context, slot time.Time) error {
		n, err := outbox.PruneDelivered(ctx, a.DB, slot.Add(-a.Config.Jobs.DeliveryRetention))
		if err == nil && n > 0 {
			a.Logger.Info("delivered messages pruned", "count", n)
		}
		return err
	}}
}

// Scheduler is the periodic-job runner on the app's database, clock and time zone.
func (a *App) Scheduler() *schedules.Scheduler {
	return schedules.New(a.DB, a.Logger, schedules.Options{Location: a.Config.Jobs.Location, Now: a.Clock})
}

// Deliverer sends what the outbox holds.
func (a *App) Deliverer() *outbox.Deliverer {
	return outbox.New(a.DB, a.Config.Jobs.Outbox, a.Clock, a.Logger)
}

// StartJobs runs the periodic jobs of a serving process (the follow-up run, unless it is off,
// and the pruning of delivered messages), each once at start-up for a slot missed while no
// replica was up, and the deliverer. stop stops them all and waits for them.
func (a *App) StartJobs(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	deliverer := a.Deliverer()
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		deliverer.Run(ctx, a.Config.Jobs.DeliveryInterval)
	}()
	sealed := make(chan struct{})
	go func() {
		defer close(sealed)
		a.sealAuditTrail(ctx)
	}()
	exported := make(chan struct{})
	go func() {
		defer close(exported)
		a.Export.Run(ctx)
	}()
	sched := a.Scheduler()
	jobs := []schedules.Job{a.PruneJob(), a.Audit.PruneJob(auditPruneSpec), a.ExportSweepJob()}
	if s := a.Config.Jobs.FollowUpSchedule; s != "" && s != "off" {
		jobs = append(jobs, a.FollowUpJob())
	}
	for _, job := range jobs {
		if err := sched.Add(job); err != nil { // the specs were checked at start-up: cannot fail here
			a.Logger.Error("schedule", "job", job.Name, "error", err)
		}
	}
	sched.Start()
	caughtUp := make(chan struct{})
	go func() {
		defer close(caughtUp)
		for _, job := range jobs {
			if _, err := sched.CatchUp(ctx, job); err != nil {
				a.Logger.Error("catch-up run failed", "job", job.Name, "error", err)
			}
		}
	}()
	return func() {
		cancel()
		sched.Stop(context.Background())
		<-caughtUp
		<-delivered
		<-sealed
		<-exported
	}
}

// exportSweepSpec is when expired Bulk Data exports and their files are deleted: hourly, so
// files outlive their retention by an hour at most.
const exportSweepSpec = "7 * * * *"

// ExportSweepJob deletes Bulk Data export jobs past their retention, and their files.
func (a *App) ExportSweepJob() schedules.Job {
	return schedules.Job{Name: "export-sweep", Spec: exportSweepSpec, Run: func(ctx context.Context, slot time.Time) error {
		n, err := a.Export.Sweep(ctx, a.Clock())
		if err == nil && n > 0 {
			a.Logger.Info("expired exports deleted", "count", n)
		}
		return err
	}}
}

// auditPruneSpec is when audit records past their retention are deleted: daily.
const auditPruneSpec = "45 3 * * *"

// auditSealInterval is how often new audit records are chained. Seal takes an advisory lock,
// so replicas sealing at once simply take turns; a schedule's (job, slot) row per minute would
// only fill a table.
const auditSealInterval = time.Minute

func (a *App) sealAuditTrail(ctx context.Context) {
	tick := time.NewTicker(auditSealInterval)
	defer tick.Stop()
	for {
		if _, err := a.Audit.Seal(ctx); err != nil && ctx.Err() == nil {
			a.Logger.Error("sealing the audit trail", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
