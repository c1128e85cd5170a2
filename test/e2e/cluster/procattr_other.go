//go:build unix && !linux

package cluster

import "syscall"

// procAttr puts a child in its own process group (a terminal's signals do
// not reach it).
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
