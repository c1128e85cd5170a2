package scenarios

import (
	"fmt"
	"sort"
	"time"

	"github.com/capstanhq/capstan/pkg/meta"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// The checkers read what the operators recorded and list every violation
// of the safety properties they find (nil: none). They are pure functions
// of the records, so their own tests feed them violations.

// Section is one critical section as the Ledger shows it: the accepted
// writes of one lock token.
type Section struct {
	// Token is the lock token; Replica and Member the holder.
	Token   int64
	Replica string
	Member  string
	// First and Last index the section's entries in the Ledger.
	First, Last int
	// Steps counts its entries; Complete says whether the last one was
	// the section's final write.
	Steps    int
	Complete bool
}

// CheckLedger splits the Ledger's entries (the writes the store accepted,
// in its order) into critical sections and reports overlaps: a section
// whose entries are interleaved with another's, a token that goes back
// (a stale holder's write accepted after a newer holder's), one token held
// by two writers, and steps out of order within a section.
func CheckLedger(entries []api.LedgerEntry) ([]Section, []string) {
	var sections []Section
	var problems []string
	byToken := map[int64]bool{} // tokens that began a section
	for i, e := range entries {
		if n := len(sections); n > 0 && sections[n-1].Token == e.Token {
			s := &sections[n-1]
			if e.Replica != s.Replica || e.Member != s.Member {
				problems = append(problems, fmt.Sprintf("entry %d: token %d written by %s/%s and by %s/%s: two holders of one token",
					i, e.Token, s.Replica, s.Member, e.Replica, e.Member))
			}
			if e.Step != s.Steps {
				problems = append(problems, fmt.Sprintf("entry %d: token %d step %d follows step %d", i, e.Token, e.Step, s.Steps-1))
			}
			if s.Complete {
				problems = append(problems, fmt.Sprintf("entry %d: token %d writes after its final write", i, e.Token))
			}
			s.Last, s.Steps, s.Complete = i, s.Steps+1, e.Final
			continue
		}
		if _, seen := byToken[e.Token]; seen {
			problems = append(problems, fmt.Sprintf("entry %d: token %d (%s) writes again after token %d began at entry %d: overlapping critical sections",
				i, e.Token, e.Replica, sections[len(sections)-1].Token, sections[len(sections)-1].First))
			continue
		}
		if n := len(sections); n > 0 && e.Token < sections[n-1].Token {
			problems = append(problems, fmt.Sprintf("entry %d: token %d (%s) accepted after token %d (%s): a stale holder's write was not fenced off",
				i, e.Token, e.Replica, sections[n-1].Token, sections[n-1].Replica))
		}
		if e.Step != 0 {
			problems = append(problems, fmt.Sprintf("entry %d: token %d starts at step %d", i, e.Token, e.Step))
		}
		byToken[e.Token] = true
		sections = append(sections, Section{Token: e.Token, Replica: e.Replica, Member: e.Member, First: i, Last: i, Steps: 1, Complete: e.Final})
	}
	return sections, problems
}

// Record is a reconcile record with the replica that wrote it.
type Record struct {
	api.ReconcileRecord
	Replica string
}

// Records flattens ReconcileLogs.
func Records(logs []*api.ReconcileLog) []Record {
	var out []Record
	for _, l := range logs {
		for _, r := range l.Spec.Records {
			out = append(out, Record{ReconcileRecord: r, Replica: l.Spec.Replica})
		}
	}
	return out
}

// Overlap is two reconciles of one key whose time spans overlap.
type Overlap struct {
	// First started first.
	First, Second Record
}

// String describes the overlap.
func (o Overlap) String() string {
	return fmt.Sprintf("%s reconciled at once by %s (member %s, token %d, %s) and %s (member %s, token %d, %s): overlap %v",
		o.First.Key, o.First.Replica, o.First.Member, o.First.Token, o.First.Outcome,
		o.Second.Replica, o.Second.Member, o.Second.Token, o.Second.Outcome,
		nanos(min(o.First.EndNanos, o.Second.EndNanos)-o.Second.StartNanos))
}

// Involves reports whether replica took part in the overlap.
func (o Overlap) Involves(replica string) bool {
	return o.First.Replica == replica || o.Second.Replica == replica
}

// CheckOverlaps returns every pair of reconciles of the same key whose
// time spans overlap (all records come from processes on one machine, so
// their clocks agree), ordered by key and time.
func CheckOverlaps(records []Record) []Overlap {
	byKey := map[string][]Record{}
	for _, r := range records {
		byKey[r.Key] = append(byKey[r.Key], r)
	}
	var out []Overlap
	for _, rs := range byKey {
		sort.Slice(rs, func(i, j int) bool { return rs[i].StartNanos < rs[j].StartNanos })
		// Sweep: compare each record with the one that ends last among
		// those before it.
		var open *Record
		for i := range rs {
			r := &rs[i]
			if open != nil && r.StartNanos < open.EndNanos {
				out = append(out, Overlap{First: *open, Second: *r})
			}
			if open == nil || r.EndNanos > open.EndNanos {
				open = r
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].First.Key != out[j].First.Key {
			return out[i].First.Key < out[j].First.Key
		}
		return out[i].Second.StartNanos < out[j].Second.StartNanos
	})
	return out
}

// Strings describes each overlap.
func Strings(overlaps []Overlap) []string {
	out := make([]string, len(overlaps))
	for i, o := range overlaps {
		out[i] = o.String()
	}
	return out
}

// CheckItemWrites reports, per Item, accepted status writes whose shard
// token goes back in the order the store applied them (by the Item's
// resourceVersion), and shard tokens used by two processes: either means
// a stale shard holder's write was accepted after its successor's. (One
// process may write under one token with two Members: its Sharder keeps
// a lease across a new registration until it notices the old one ended.)
func CheckItemWrites(records []Record) []string {
	type write struct {
		rv int64
		Record
	}
	byKey := map[string][]write{}
	holders := map[string]string{} // "shard/token" → process
	var problems []string
	for _, r := range records {
		if r.Outcome != api.OutcomeWritten {
			continue
		}
		rv, err := meta.ParseResourceVersion(r.ResourceVersion)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: unreadable resourceVersion %q", r.Key, r.ResourceVersion))
			continue
		}
		byKey[r.Key] = append(byKey[r.Key], write{rv: int64(rv), Record: r})
		st := fmt.Sprintf("%d/%d", r.Shard, r.Token)
		if p, ok := holders[st]; ok && p != r.Process {
			problems = append(problems, fmt.Sprintf("shard %d token %d used by processes %s and %s", r.Shard, r.Token, p, r.Process))
		}
		holders[st] = r.Process
	}
	for key, ws := range byKey {
		sort.Slice(ws, func(i, j int) bool { return ws[i].rv < ws[j].rv })
		for i := 1; i < len(ws); i++ {
			if ws[i].rv == ws[i-1].rv {
				problems = append(problems, fmt.Sprintf("%s: two accepted writes produced resourceVersion %d", key, ws[i].rv))
			}
			if ws[i].Token < ws[i-1].Token {
				problems = append(problems, fmt.Sprintf("%s: write by %s with token %d accepted after %s's with token %d",
					key, ws[i].Replica, ws[i].Token, ws[i-1].Replica, ws[i-1].Token))
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// TokensAcrossMembers lists the shard tokens under which one process
// reconciled with more than one Member: it kept a shard lease taken by an
// earlier registration after registering anew. Not a safety violation by
// itself (fencing orders the writes; CheckItemWrites and CheckOverlaps
// judge them), but worth knowing.
func TokensAcrossMembers(records []Record) []string {
	members := map[string]map[string]bool{} // "process shard/token" → members
	for _, r := range records {
		k := fmt.Sprintf("%s shard %d token %d", r.Process, r.Shard, r.Token)
		if members[k] == nil {
			members[k] = map[string]bool{}
		}
		members[k][r.Member] = true
	}
	var out []string
	for k, ms := range members {
		if len(ms) > 1 {
			names := make([]string, 0, len(ms))
			for m := range ms {
				names = append(names, m)
			}
			sort.Strings(names)
			out = append(out, fmt.Sprintf("%s under members %v", k, names))
		}
	}
	sort.Strings(out)
	return out
}

// Kill is one killed leader: its token, and when the kill was sent (the
// test's clock).
type Kill struct {
	Token int64
	At    int64 // Unix nanoseconds
}

// CheckJobs reports Jobs not done, Jobs done under a token whose Term
// names another leader, and Jobs created after a leader was killed but
// done under that leader's token or an older one.
func CheckJobs(jobs []*api.Job, created map[string]int64, terms []*api.Term, kills []Kill) []string {
	byToken := map[int64]*api.Term{}
	for _, t := range terms {
		byToken[t.Spec.Token] = t
	}
	var problems []string
	for _, j := range jobs {
		if !j.Status.Done {
			problems = append(problems, fmt.Sprintf("job %s is not done", j.Name))
			continue
		}
		t := byToken[j.Status.Token]
		switch {
		case t == nil:
			problems = append(problems, fmt.Sprintf("job %s done by %s with token %d, which no Term records", j.Name, j.Status.DoneBy, j.Status.Token))
		case t.Spec.Identity != j.Status.DoneBy:
			problems = append(problems, fmt.Sprintf("job %s done by %s with token %d, but token %d belongs to %s",
				j.Name, j.Status.DoneBy, j.Status.Token, j.Status.Token, t.Spec.Identity))
		}
		at, ok := created[j.Name]
		if !ok {
			continue
		}
		for _, k := range kills {
			if at > k.At && j.Status.Token <= k.Token {
				problems = append(problems, fmt.Sprintf("job %s created after the leader with token %d was killed, but done with token %d",
					j.Name, k.Token, j.Status.Token))
			}
		}
	}
	return problems
}

func nanos(n int64) time.Duration { return time.Duration(n) }
