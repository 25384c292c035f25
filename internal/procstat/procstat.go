// Package procstat reads processes' CPU time from Linux's /proc, for the benchmarks that
// state what an operation costs the server and PostgreSQL apart: unlike a rate, CPU time
// hardly moves when other work shares the machine.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTick is Linux's USER_HZ, the unit of /proc/PID/stat's times: 100 on every platform Go
// supports.
const clockTick = 100

// CPU is a process's user and system time in seconds (with its reaped children's when
// children is set), and its parent's pid, from /proc/PID/stat.
func CPU(pid int, children bool) (seconds float64, parent int, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces; the fields after it are fixed:
	// state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[end+1:]))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	parent, _ = strconv.Atoi(f[1])
	last := 12
	if children {
		last = 14
	}
	var ticks float64
	for _, v := range f[11 : last+1] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return ticks / clockTick, parent, nil
}

// TreeCPU is the CPU time in seconds of root, the children it has reaped and its running
// children: for a postmaster, PostgreSQL's whole work, backends and background workers alike.
func TreeCPU(root int) (float64, error) {
	total, _, err := CPU(root, true)
	if err != nil {
		return 0, err
	}
	for _, pid := range pids() {
		if cpu, parent, err := CPU(pid, false); err == nil && parent == root {
			total += cpu
		}
	}
	return total, nil
}

// ChildNamed is the pid of parent's child process whose command name is name, or 0.
func ChildNamed(parent int, name string) int {
	for _, pid := range pids() {
		if _, p, err := CPU(pid, false); err != nil || p != parent {
			continue
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == name {
			return pid
		}
	}
	return 0
}

// pids are the processes running now.
func pids() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}
