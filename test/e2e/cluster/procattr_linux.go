package cluster

import "syscall"

// procAttr puts a child in its own process group (a terminal's signals do
// not reach it) and kills it when the test process dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
