package storetest

import (
	"sync"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func (s *suite) fenceTests() []test {
	return []test{
		{"RecordsToken", s.testFenceRecordsToken},
		{"StaleHolderRefused", s.testFenceStaleHolderRefused},
		{"NamesAreIndependent", s.testFenceNamesAreIndependent},
		{"StatusWritesToo", s.testFenceStatusWritesToo},
		{"ConcurrentHoldersNeverRegress", s.testFenceConcurrentHoldersNeverRegress},
		{"BadFence", s.testFenceBad},
	}
}

const fenceName = "Lock/ns1/the-lock"

func (s *suite) testFenceRecordsToken(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "fenced")
	if err := st.Create(ctx(t), w, store.WithFence(fenceName, 3)); err != nil {
		t.Fatal(err)
	}
	if got := w.Fences[fenceName]; got != 3 {
		t.Fatalf("after Create the object records %v, want token 3", w.Fences)
	}
	got := &Widget{}
	if err := st.Get(ctx(t), w.Key(), got); err != nil {
		t.Fatal(err)
	}
	if got.Fences[fenceName] != 3 {
		t.Fatalf("stored fences %v, want token 3", got.Fences)
	}
	// An unfenced update keeps the record: clients cannot clear it.
	got.Fences = nil
	got.Spec.Size = 2
	if err := st.Update(ctx(t), got); err != nil {
		t.Fatal(err)
	}
	if got.Fences[fenceName] != 3 {
		t.Fatalf("unfenced update changed fences to %v", got.Fences)
	}
}

func (s *suite) testFenceStaleHolderRefused(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "ledger")
	if err := st.Create(ctx(t), w); err != nil {
		t.Fatal(err)
	}
	stale := meta.DeepCopy(w)
	// The successor (token 8) writes first…
	w.Spec.Color = "successor"
	if err := st.Update(ctx(t), w, store.WithFence(fenceName, 8)); err != nil {
		t.Fatal(err)
	}
	// …then the paused holder (token 7) wakes up: refused even without a
	// resourceVersion to compare.
	stale.ResourceVersion = ""
	stale.Spec.Color = "stale"
	err := st.Update(ctx(t), stale, store.WithFence(fenceName, 7))
	if !errs.IsConflict(err) {
		t.Fatalf("stale fenced update: %v, want Conflict", err)
	}
	got := &Widget{}
	if err := st.Get(ctx(t), w.Key(), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Color != "successor" || got.Fences[fenceName] != 8 {
		t.Fatalf("stored after a refused write: color %q fences %v", got.Spec.Color, got.Fences)
	}
	// The same token again is fine (the holder's next write).
	got.Spec.Color = "successor-again"
	if err := st.Update(ctx(t), got, store.WithFence(fenceName, 8)); err != nil {
		t.Fatalf("write with the recorded token: %v", err)
	}
}

func (s *suite) testFenceNamesAreIndependent(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "two-locks")
	if err := st.Create(ctx(t), w, store.WithFence("Lock/ns1/a", 50)); err != nil {
		t.Fatal(err)
	}
	w.Spec.Size = 9
	if err := st.Update(ctx(t), w, store.WithFence("Lock/ns1/b", 1)); err != nil {
		t.Fatalf("a token of another lock must not be compared: %v", err)
	}
	if w.Fences["Lock/ns1/a"] != 50 || w.Fences["Lock/ns1/b"] != 1 {
		t.Fatalf("fences %v", w.Fences)
	}
}

func (s *suite) testFenceStatusWritesToo(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "status-fenced")
	if err := st.Create(ctx(t), w); err != nil {
		t.Fatal(err)
	}
	w.Status.Phase = "new-holder"
	if err := st.UpdateStatus(ctx(t), w, store.WithFence(fenceName, 5)); err != nil {
		t.Fatal(err)
	}
	if w.Fences[fenceName] != 5 {
		t.Fatalf("fences after UpdateStatus: %v", w.Fences)
	}
	w.ResourceVersion = ""
	w.Status.Phase = "old-holder"
	if err := st.UpdateStatus(ctx(t), w, store.WithFence(fenceName, 4)); !errs.IsConflict(err) {
		t.Fatalf("stale fenced status write: %v, want Conflict", err)
	}
}

// Holders with tokens 1..n write concurrently without resourceVersions:
// the recorded token never goes down, and every write that succeeded had a
// token at least as high as every earlier successful one.
func (s *suite) testFenceConcurrentHoldersNeverRegress(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "contended")
	if err := st.Create(ctx(t), w); err != nil {
		t.Fatal(err)
	}
	const holders = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []int64
	for tok := int64(1); tok <= holders; tok++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				c := widget("ns1", "contended")
				c.Spec.Size = int(tok)
				err := st.Update(ctx(t), c, store.WithFence(fenceName, tok))
				switch {
				case err == nil:
					mu.Lock()
					accepted = append(accepted, c.Fences[fenceName])
					mu.Unlock()
				case errs.IsConflict(err):
				default:
					t.Errorf("token %d: %v", tok, err)
				}
			}
		}()
	}
	wg.Wait()
	got := &Widget{}
	if err := st.Get(ctx(t), w.Key(), got); err != nil {
		t.Fatal(err)
	}
	max := int64(0)
	for _, a := range accepted {
		max = maxInt64(max, a)
	}
	if got.Fences[fenceName] != max || int64(got.Spec.Size) != max {
		t.Fatalf("final fence %d size %d, want the highest accepted token %d", got.Fences[fenceName], got.Spec.Size, max)
	}
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func (s *suite) testFenceBad(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "bad-fence")
	if err := st.Create(ctx(t), w, store.WithFence("", 1)); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "fence.name" {
		t.Fatalf("empty fence name: %v", err)
	}
	if err := st.Create(ctx(t), w, store.WithFence(fenceName, 0)); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "fence.token" {
		t.Fatalf("zero token: %v", err)
	}
	if err := st.Get(ctx(t), w.Key(), &Widget{}); !errs.IsNotFound(err) {
		t.Fatalf("a refused Create stored something: %v", err)
	}
}
