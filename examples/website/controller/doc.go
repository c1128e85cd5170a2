// Package controller holds the website example's two reconcilers and wires
// them into a manager.
//
// The Website controller owns WebServers: for a Website with N replicas it
// keeps WebServers <website>-0 … <website>-(N-1), each controlled by the
// Website (an owner reference with controller set), creating and updating
// them with controllerutil.CreateOrUpdate and deleting the extra ones after
// a scale-down. It registers the Website's domain in a DNS registry (an
// external system) and, through a finalizer, removes the record before the
// Website may disappear; the manager's garbage collector then deletes the
// WebServers whose owner is gone. It reports readyReplicas and the Ready
// and Progressing conditions with the generation they describe.
//
// The WebServer controller plays the part of the thing that runs replicas:
// it "starts" each generation of a WebServer (after StartupDelay) and
// reports it Ready.
//
// Both controllers read from the manager's cache and write to the store;
// every step is idempotent, so a reconcile may stop anywhere and the next
// one finishes the job.
package controller
