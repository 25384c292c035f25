//go:build !linux

package postgres

import "syscall"

// childAttributes: without Linux's parent-death signal, a postgres left by a killed cartreg
// is found and stopped at the next start instead (see clearPreviousOwner).
func childAttributes(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}
