package postgres

import "syscall"

// childAttributes runs a child in its own process group, so a Ctrl-C in the terminal reaches
// cartreg alone and cartreg decides when the database stops (after in-flight requests drain);
// gives it the identity cred names; and has the kernel send it SIGINT, PostgreSQL's fast
// shutdown, should cartreg die without stopping it.
func childAttributes(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT, Credential: cred}
}
