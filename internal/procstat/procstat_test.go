package procstat

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestCPUOfThisProcessAndItsChild(t *testing.T) {
	deadline := time.Now().Add(100 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = n * n
	}
	self, parent, err := CPU(os.Getpid(), false)
	if err != nil {
		t.Fatal(err)
	}
	if self <= 0 || parent != os.Getppid() {
		t.Errorf("this process: %v s of CPU, parent %d; want more than 0 and %d", self, parent, os.Getppid())
	}

	child := exec.Command("sleep", "10")
	if err := child.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer child.Process.Kill()
	if got := ChildNamed(os.Getpid(), "sleep"); got != child.Process.Pid {
		t.Errorf("ChildNamed(self, sleep) = %d, want %d", got, child.Process.Pid)
	}
	if got := ChildNamed(os.Getpid(), "no-such-command"); got != 0 {
		t.Errorf("ChildNamed(self, no-such-command) = %d, want 0", got)
	}
	tree, err := TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if tree < self {
		t.Errorf("the tree's %v s is less than the process's own %v s", tree, self)
	}
	if _, _, err := CPU(-1, false); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
