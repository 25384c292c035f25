package main

import (
	"fmt"

	"github.com/cartreg/cartreg/internal/procstat"
)

// CPU is the processor time a phase cost per operation, split between the server process and
// PostgreSQL (the postmaster and its backends). Unlike a rate, it hardly moves when other work
// shares the machine, so two builds can be compared on a busy one.
type CPU struct {
	ServerMS   float64 `json:"server_ms"`
	PostgresMS float64 `json:"postgres_ms"`
}

// cpuSample is the CPU seconds the server and PostgreSQL had used at one moment.
type cpuSample struct{ server, postgres float64 }

// cpuNow reads the server's CPU time, and PostgreSQL's: that of the postmaster the server
// started (its child), of the backends it has reaped, and of its running children.
func (s *server) cpuNow() (cpuSample, error) {
	serverPID := s.cmd.Process.Pid
	server, _, err := procstat.CPU(serverPID, false)
	if err != nil {
		return cpuSample{}, err
	}
	postmaster := procstat.ChildNamed(serverPID, "postgres")
	if postmaster == 0 {
		return cpuSample{}, fmt.Errorf("no PostgreSQL among the server's child processes")
	}
	pg, err := procstat.TreeCPU(postmaster)
	if err != nil {
		return cpuSample{}, err
	}
	return cpuSample{server: server, postgres: pg}, nil
}

// cpuMeter measures one phase: start it, then call it with the number of operations done.
func (s *server) cpuMeter() (func(ops int) (CPU, error), error) {
	before, err := s.cpuNow()
	if err != nil {
		return nil, err
	}
	return func(ops int) (CPU, error) {
		after, err := s.cpuNow()
		if err != nil || ops == 0 {
			return CPU{}, err
		}
		return CPU{
			ServerMS:   (after.server - before.server) * 1000 / float64(ops),
			PostgresMS: (after.postgres - before.postgres) * 1000 / float64(ops),
		}, nil
	}, nil
}
