package coordination

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

func TestMembershipConfigValidation(t *testing.T) {
	st := newStore(t)
	ok := MembershipConfig{Store: st, Namespace: testNS, Group: defaultGroup, LeaseDuration: memberLease, RenewInterval: memberRenew}
	cases := []struct {
		name  string
		mod   func(*MembershipConfig)
		field string
	}{
		{"no store", func(c *MembershipConfig) { c.Store = nil }, "store"},
		{"bad namespace", func(c *MembershipConfig) { c.Namespace = "Bad NS" }, "namespace"},
		{"bad group", func(c *MembershipConfig) { c.Group = "under_score" }, "group"},
		{"long group", func(c *MembershipConfig) { c.Group = strings.Repeat("g", 201) }, "group"},
		{"negative lease", func(c *MembershipConfig) { c.LeaseDuration = -time.Second }, "leaseDuration"},
		{"negative renew", func(c *MembershipConfig) { c.RenewInterval = -time.Second }, "renewInterval"},
		{"renew over half the lease", func(c *MembershipConfig) { c.RenewInterval = memberLease/2 + 1 }, "renewInterval"},
		{"renew equal to the lease", func(c *MembershipConfig) { c.RenewInterval = memberLease }, "renewInterval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			_, err := NewMembership(cfg)
			if !errs.IsInvalidArgument(err) || !strings.HasPrefix(errs.FieldOf(err), tc.field) {
				t.Fatalf("NewMembership = %v (field %q), want InvalidArgument on %q", err, errs.FieldOf(err), tc.field)
			}
		})
	}
	t.Run("scheme without the kinds", func(t *testing.T) {
		cfg := ok
		cfg.Store = bareStore(t)
		if _, err := NewMembership(cfg); !errs.IsFailedPrecondition(err) {
			t.Fatalf("NewMembership = %v, want FailedPrecondition", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		cfg := ok
		cfg.LeaseDuration, cfg.RenewInterval = 0, 0
		m, err := NewMembership(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if m.cfg.LeaseDuration != DefaultMemberLeaseDuration || m.cfg.RenewInterval != DefaultMemberLeaseDuration/3 {
			t.Fatalf("defaults = %v/%v", m.cfg.LeaseDuration, m.cfg.RenewInterval)
		}
	})
}

func TestMembershipRegistersAndRenews(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	p := newMembership(t, st, defaultGroup)
	s, err := p.m.WaitSession(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Name, defaultGroup+"-") || len(s.Name) != len(defaultGroup)+11 || s.UID == "" {
		t.Fatalf("session = %+v", s)
	}
	mem := getMember(t, st, s.Name)
	if mem == nil || mem.UID != s.UID || mem.Spec.Group != defaultGroup || mem.Spec.LeaseDurationMillis != millis(memberLease) || mem.Spec.PID == 0 {
		t.Fatalf("member = %+v", mem)
	}
	if got := p.m.Live(); !slices.Equal(got, []string{s.Name}) {
		t.Fatalf("Live = %v", got)
	}
	if ref := s.OwnerReference(); ref.Kind != KindMember || ref.Name != s.Name || ref.UID != s.UID {
		t.Fatalf("owner reference = %+v", ref)
	}
	// Renewals write new versions.
	seen := map[string]bool{mem.ResourceVersion: true}
	eventually(t, "three renewals", func() (bool, string) {
		cur := getMember(t, st, s.Name)
		if cur == nil {
			return false, "gone"
		}
		seen[cur.ResourceVersion] = true
		return len(seen) >= 4 && cur.Spec.Renewals >= 3, fmt.Sprintf("versions %d, renewals %d", len(seen), cur.Spec.Renewals)
	})
	if s.Err() != nil || done(s.Done()) {
		t.Fatalf("session ended: %v", s.Err())
	}

	// A clean stop deletes the member and ends the session without error.
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if !done(s.Done()) || s.Err() != nil {
		t.Fatalf("after stop: done %v, err %v", done(s.Done()), s.Err())
	}
	if getMember(t, st, s.Name) != nil {
		t.Fatal("the member outlived its process")
	}
	if _, err := p.m.WaitSession(context.Background()); !errs.IsFailedPrecondition(err) {
		t.Fatalf("WaitSession after stop = %v, want FailedPrecondition", err)
	}
	if err := p.m.Start(context.Background()); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Start = %v, want FailedPrecondition", err)
	}
}

func TestMembershipWaitSessionRespectsContext(t *testing.T) {
	st := newStore(t)
	m, err := NewMembership(MembershipConfig{Store: st, Namespace: testNS, Group: defaultGroup, LeaseDuration: memberLease, RenewInterval: memberRenew})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.WaitSession(ctx); !errs.IsDeadlineExceeded(err) {
		t.Fatalf("WaitSession of an unstarted membership = %v, want DeadlineExceeded", err)
	}
}

// Every member sees every other; a member that stops cleanly leaves at
// once, not after its lease.
func TestMembershipLive(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	ps := []*process{newMembership(t, st, defaultGroup), newMembership(t, st, defaultGroup), newMembership(t, st, defaultGroup)}
	other := newMembership(t, st, "other")
	var names []string
	for _, p := range ps {
		names = append(names, p.m.Session().Name)
	}
	slices.Sort(names)
	for i, p := range ps {
		eventually(t, fmt.Sprintf("member %d sees all", i), func() (bool, string) {
			got := p.m.Live()
			return slices.Equal(got, names), fmt.Sprint(got)
		})
	}
	if got := other.m.Live(); !slices.Equal(got, []string{other.m.Session().Name}) {
		t.Fatalf("another group's Live = %v", got)
	}
	changes := ps[0].m.Changes()
	left := ps[2].m.Session().Name
	if err := ps[2].stop(); err != nil {
		t.Fatal(err)
	}
	runtimetest.Recv(t, changes, "a change")
	want := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == left })
	eventually(t, "the stopped member is gone", func() (bool, string) {
		got := ps[0].m.Live()
		return slices.Equal(got, want), fmt.Sprint(got)
	})
	alive, err := ps[0].m.Alive(context.Background(), left, "")
	if err != nil || alive {
		t.Fatalf("Alive(stopped) = %v, %v", alive, err)
	}
	alive, err = ps[0].m.Alive(context.Background(), ps[1].m.Session().Name, "wrong-uid")
	if err != nil || alive {
		t.Fatalf("Alive(other uid) = %v, %v", alive, err)
	}
	alive, err = ps[0].m.Alive(context.Background(), ps[1].m.Session().Name, ps[1].m.Session().UID)
	if err != nil || !alive {
		t.Fatalf("Alive(live) = %v, %v", alive, err)
	}
}

// A Member that never renews is deleted by another member, and only once
// the lease duration has passed since it was written; members of other
// groups are left to their own group.
func TestMembershipReapsExpiredMembers(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	g := newGate(st, "reaper")
	reaper := newMembership(t, g, defaultGroup)
	hand := func(name, group string) time.Time {
		written := time.Now()
		m := &Member{ObjectMeta: meta.ObjectMeta{Namespace: testNS, Name: name},
			Spec: MemberSpec{Group: group, LeaseDurationMillis: millis(memberLease)}}
		if err := st.Create(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		return written
	}
	written := hand(defaultGroup+"-ghost", defaultGroup)
	hand("other-ghost", "other")
	eventually(t, "the ghost reaped", func() (bool, string) { return getMember(t, st, defaultGroup+"-ghost") == nil, "" })
	var del *writeRecord
	for _, w := range g.Writes("delete", KindMember) {
		if w.key.Name == defaultGroup+"-ghost" {
			del = &w
		}
	}
	if del == nil {
		t.Fatal("the reaper did not delete the ghost; who did?")
	}
	if gap := del.start.Sub(written); gap < memberLease {
		t.Fatalf("the ghost was deleted %v after it was written, before its lease %v", gap, memberLease)
	}
	if getMember(t, st, "other-ghost") == nil {
		t.Fatal("a member of another group was reaped")
	}
	eventually(t, "the reaper's view without the ghost", func() (bool, string) {
		got := reaper.m.Live()
		return slices.Equal(got, []string{reaper.m.Session().Name}), fmt.Sprint(got)
	})
}

// A process whose Member someone else deleted ends its session, says why,
// and registers anew under a new name.
func TestMembershipDeletedMemberStartsNewSession(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	p := newMembership(t, st, defaultGroup)
	watcher := newMembership(t, st, defaultGroup)
	s1 := p.m.Session()
	eventually(t, "the watcher sees p", func() (bool, string) { return slices.Contains(watcher.m.Live(), s1.Name), "" })
	deleteMember(t, st, s1.Name)
	runtimetest.Recv(t, s1.Done(), "the session to end")
	if err := s1.Err(); !errs.IsAborted(err) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("Err = %v, want Aborted saying it was deleted", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s2, err := p.m.WaitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Name == s1.Name || s2.UID == s1.UID {
		t.Fatalf("new session %s reuses the old name %s", s2.Name, s1.Name)
	}
	if getMember(t, st, s2.Name) == nil {
		t.Fatal("the new member is not stored")
	}
	eventually(t, "the watcher sees the new member only", func() (bool, string) {
		got := watcher.m.Live()
		return slices.Contains(got, s2.Name) && !slices.Contains(got, s1.Name), fmt.Sprint(got)
	})
}

// A process that stalls (its store calls hang) ends its session on its
// own clock; the others delete its Member after the lease; when it wakes
// up it registers anew.
func TestMembershipPausedProcess(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	g := newGate(st, "paused")
	p := newMembership(t, g, defaultGroup)
	reaper := newMembership(t, st, defaultGroup)
	s1 := p.m.Session()
	eventually(t, "the reaper sees p", func() (bool, string) { return slices.Contains(reaper.m.Live(), s1.Name), "" })

	g.Pause()
	runtimetest.Recv(t, s1.Done(), "the paused session to end")
	if err := s1.Err(); !errs.IsAborted(err) || !strings.Contains(err.Error(), "not renewed") {
		t.Fatalf("Err = %v, want Aborted saying it was not renewed", err)
	}
	eventually(t, "the reaper deletes p's member", func() (bool, string) { return getMember(t, st, s1.Name) == nil, "" })
	g.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s2, err := p.m.WaitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Name == s1.Name {
		t.Fatal("re-registered under the old name")
	}
	eventually(t, "the reaper sees the new member", func() (bool, string) {
		got := reaper.m.Live()
		return slices.Contains(got, s2.Name) && !slices.Contains(got, s1.Name), fmt.Sprint(got)
	})
}

// Work that holds the registration keeps the Member registered (and
// renewed, longer than its lease) after Start's context ended; the Member
// goes when the hold is released.
func TestMembershipHold(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	p := newMembership(t, st, defaultGroup)
	s := p.m.Session()
	release := p.m.hold()
	stopped := make(chan error, 1)
	go func() { stopped <- p.stop() }()
	// Renewals go on past the lease duration while held.
	before := getMember(t, st, s.Name)
	enough := before.Spec.Renewals + int64(2*memberLease/memberRenew)
	eventually(t, "renewals while held", func() (bool, string) {
		cur := getMember(t, st, s.Name)
		if cur == nil {
			return false, "member deleted while held"
		}
		return cur.Spec.Renewals >= enough, fmt.Sprint(cur.Spec.Renewals)
	})
	select {
	case err := <-stopped:
		t.Fatalf("Start returned (%v) while held", err)
	default:
	}
	if done(s.Done()) {
		t.Fatal("the held session ended")
	}
	release()
	release() // twice is harmless
	if err := runtimetest.Recv(t, stopped, "Start to return"); err != nil {
		t.Fatal(err)
	}
	if getMember(t, st, s.Name) != nil {
		t.Fatal("member still registered")
	}
}
