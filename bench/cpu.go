package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPU is the processor time a phase cost per operation, split between the server process and
// PostgreSQL (the postmaster and its backends). Unlike a rate, it hardly moves when other work
// shares the machine, so two builds can be compared on a busy one.
type CPU struct {
	ServerMS   float64 `json:"server_ms"`
	PostgresMS float64 `json:"postgres_ms"`
}

// clockTick is Linux's USER_HZ, the unit of /proc/PID/stat's times: 100 on every platform Go
// supports.
const clockTick = 100

// cpuSample is the CPU seconds the server and PostgreSQL had used at one moment.
type cpuSample struct{ server, postgres float64 }

// cpuNow reads the server's CPU time, and PostgreSQL's: that of the postmaster the server
// started (its child), of the backends it has reaped, and of its running children.
func (s *server) cpuNow() (cpuSample, error) {
	serverPID := s.cmd.Process.Pid
	server, _, err := procCPU(serverPID, false)
	if err != nil {
		return cpuSample{}, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return cpuSample{}, err
	}
	type proc struct {
		cpu    float64
		parent int
	}
	procs := map[int]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cpu, parent, err := procCPU(pid, false); err == nil {
			procs[pid] = proc{cpu, parent}
		}
	}
	postmaster := 0
	for pid, p := range procs {
		if p.parent == serverPID {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "postgres" {
				postmaster = pid
			}
		}
	}
	if postmaster == 0 {
		return cpuSample{}, fmt.Errorf("no PostgreSQL among the server's child processes")
	}
	pg, _, err := procCPU(postmaster, true)
	if err != nil {
		return cpuSample{}, err
	}
	for _, p := range procs {
		if p.parent == postmaster {
			pg += p.cpu
		}
	}
	return cpuSample{server: server, postgres: pg}, nil
}

// procCPU is a process's user and system time in seconds (with reaped children's when
// children is set), and its parent's pid, from /proc/PID/stat.
func procCPU(pid int, children bool) (float64, int, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces; the fields after it are fixed.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[end+1:]))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
	parent, _ := strconv.Atoi(f[1])
	var ticks float64
	last := 12
	if children {
		last = 14
	}
	for _, v := range f[11 : last+1] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return ticks / clockTick, parent, nil
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
