package scenarios

import (
	"strings"
	"testing"

	"github.com/capstanhq/capstan/pkg/meta"

	"github.com/capstanhq/capstan/test/e2e/api"
)

func entry(token int64, replica string, step int, final bool) api.LedgerEntry {
	return api.LedgerEntry{Token: token, Replica: replica, Member: "m-" + replica, Step: step, Final: final}
}

func TestCheckLedger(t *testing.T) {
	tests := []struct {
		name     string
		entries  []api.LedgerEntry
		sections int
		problem  string // substring of the one expected problem; "" for none
	}{
		{name: "empty", entries: nil},
		{name: "turns", sections: 3, entries: []api.LedgerEntry{
			entry(1, "a", 0, false), entry(1, "a", 1, false), entry(1, "a", 2, true),
			entry(2, "b", 0, false), entry(2, "b", 1, true),
			entry(4, "a", 0, false), // token 3 never wrote; 4's section was cut
		}},
		{name: "interleaved sections", sections: 2, problem: "overlapping critical sections", entries: []api.LedgerEntry{
			entry(1, "a", 0, false), entry(2, "b", 0, false), entry(1, "a", 1, true),
		}},
		{name: "stale write after a newer holder", sections: 2, problem: "not fenced off", entries: []api.LedgerEntry{
			entry(2, "b", 0, false), entry(1, "a", 0, false),
		}},
		{name: "one token, two holders", sections: 1, problem: "two holders of one token", entries: []api.LedgerEntry{
			entry(1, "a", 0, false), entry(1, "b", 1, true),
		}},
		{name: "a lost write inside a section", sections: 1, problem: "step 2 follows step 0", entries: []api.LedgerEntry{
			entry(1, "a", 0, false), entry(1, "a", 2, true),
		}},
		{name: "a write after the final one", sections: 1, problem: "after its final write", entries: []api.LedgerEntry{
			entry(1, "a", 0, true), entry(1, "a", 1, false),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sections, problems := CheckLedger(tt.entries)
			if len(sections) != tt.sections {
				t.Errorf("got %d sections, want %d: %+v", len(sections), tt.sections, sections)
			}
			checkProblems(t, problems, tt.problem)
		})
	}
}

func TestCheckLedgerSections(t *testing.T) {
	sections, _ := CheckLedger([]api.LedgerEntry{entry(3, "a", 0, false), entry(3, "a", 1, true), entry(5, "c", 0, false)})
	want := []Section{
		{Token: 3, Replica: "a", Member: "m-a", First: 0, Last: 1, Steps: 2, Complete: true},
		{Token: 5, Replica: "c", Member: "m-c", First: 2, Last: 2, Steps: 1, Complete: false},
	}
	if len(sections) != len(want) {
		t.Fatalf("sections = %+v, want %+v", sections, want)
	}
	for i := range want {
		if sections[i] != want[i] {
			t.Errorf("section %d = %+v, want %+v", i, sections[i], want[i])
		}
	}
}

func rec(key, replica string, start, end int64) Record {
	return Record{Replica: replica, ReconcileRecord: api.ReconcileRecord{Key: key, Member: "m-" + replica, Process: replica + "/1",
		StartNanos: start, EndNanos: end, Outcome: api.OutcomeWritten}}
}

func TestCheckOverlaps(t *testing.T) {
	tests := []struct {
		name    string
		records []Record
		problem string
	}{
		{name: "sequential", records: []Record{rec("k", "a", 0, 10), rec("k", "b", 10, 20), rec("k", "a", 25, 30)}},
		{name: "different keys at once", records: []Record{rec("k1", "a", 0, 10), rec("k2", "b", 5, 15)}},
		{name: "one key at once", problem: "k reconciled at once by a", records: []Record{rec("k", "a", 0, 10), rec("k", "b", 5, 15)}},
		{name: "nested in a long one", problem: "k reconciled at once by a", records: []Record{
			rec("k", "a", 0, 100), rec("k", "b", 10, 20), rec("k", "b", 30, 40),
		}[:2]},
		{name: "out of order input", problem: "k reconciled at once", records: []Record{rec("k", "b", 50, 60), rec("k", "a", 0, 55)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkProblems(t, Strings(CheckOverlaps(tt.records)), tt.problem) })
	}
	// A long reconcile overlapping two later ones is two overlaps.
	got := CheckOverlaps([]Record{rec("k", "a", 0, 100), rec("k", "b", 10, 20), rec("k", "b", 30, 40)})
	if len(got) != 2 {
		t.Fatalf("got %d overlaps, want 2: %v", len(got), got)
	}
	if !got[0].Involves("a") || !got[0].Involves("b") || got[0].Involves("c") {
		t.Errorf("Involves of %v is wrong", got[0])
	}
	if got[0].Second.StartNanos != 10 || got[1].Second.StartNanos != 30 {
		t.Errorf("overlaps out of order: %v", got)
	}
}

func write(key, replica string, shard int, token int64, rv string) Record {
	r := rec(key, replica, 0, 0)
	r.Shard, r.Token, r.ResourceVersion = shard, token, rv
	return r
}

func TestCheckItemWrites(t *testing.T) {
	tests := []struct {
		name    string
		records []Record
		problem string
	}{
		{name: "tokens grow", records: []Record{write("k", "a", 1, 1, "2"), write("k", "a", 1, 1, "3"), write("k", "b", 1, 2, "5")}},
		{name: "refused and conflicting attempts do not count", records: []Record{
			write("k", "b", 1, 2, "5"),
			{Replica: "a", ReconcileRecord: api.ReconcileRecord{Key: "k", Shard: 1, Token: 1, Member: "m-a", Outcome: api.OutcomeRefused}},
		}},
		{name: "a stale write accepted after the successor's", problem: "with token 1 accepted after b's with token 2",
			records: []Record{write("k", "a", 1, 1, "2"), write("k", "b", 1, 2, "5"), write("k", "a", 1, 1, "7")}},
		{name: "one shard token used by two processes", problem: "shard 1 token 2 used by processes a/1 and b/1",
			records: []Record{write("k1", "a", 1, 2, "2"), write("k2", "b", 1, 2, "3")}},
		{name: "one process, two members, one token", records: []Record{write("k1", "a", 1, 2, "2"), func() Record {
			r := write("k2", "a", 1, 2, "3")
			r.Member = "m-a-again"
			return r
		}()}},
		{name: "two writes of one version", problem: "two accepted writes produced resourceVersion 4",
			records: []Record{write("k", "a", 1, 1, "4"), write("k", "a", 1, 1, "4")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkProblems(t, CheckItemWrites(tt.records), tt.problem) })
	}
}

func TestTokensAcrossMembers(t *testing.T) {
	a1, a2 := write("k1", "a", 1, 2, "2"), write("k2", "a", 1, 2, "3")
	a2.Member = "m-a-again"
	b := write("k3", "b", 2, 5, "4")
	if got := TokensAcrossMembers([]Record{a1, b}); len(got) != 0 {
		t.Errorf("one member per token: got %q", got)
	}
	got := TokensAcrossMembers([]Record{a1, a2, b})
	if len(got) != 1 || !strings.Contains(got[0], "a/1 shard 1 token 2 under members [m-a m-a-again]") {
		t.Errorf("got %q", got)
	}
}

func job(name string, done bool, by string, token int64) *api.Job {
	return &api.Job{ObjectMeta: meta.ObjectMeta{Name: name}, Status: api.JobStatus{Done: done, DoneBy: by, Token: token}}
}

func term(token int64, id string) *api.Term {
	return &api.Term{Spec: api.TermSpec{Identity: id, Token: token}}
}

func TestCheckJobs(t *testing.T) {
	terms := []*api.Term{term(1, "a-1"), term(2, "b-1")}
	kills := []Kill{{Token: 1, At: 100}}
	created := map[string]int64{"j1": 50, "j2": 150}
	tests := []struct {
		name    string
		jobs    []*api.Job
		problem string
	}{
		{name: "consistent", jobs: []*api.Job{job("j1", true, "a-1", 1), job("j2", true, "b-1", 2)}},
		{name: "not done", problem: "j2 is not done", jobs: []*api.Job{job("j1", true, "a-1", 1), job("j2", false, "", 0)}},
		{name: "done under another leader's token", problem: "but token 2 belongs to b-1", jobs: []*api.Job{job("j1", true, "a-1", 2)}},
		{name: "unknown token", problem: "which no Term records", jobs: []*api.Job{job("j1", true, "c-1", 3)}},
		{name: "done by the killed leader after its death", problem: "created after the leader with token 1 was killed",
			jobs: []*api.Job{job("j2", true, "a-1", 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkProblems(t, CheckJobs(tt.jobs, created, terms, kills), tt.problem) })
	}
}

// checkProblems wants no problems if want is empty, else exactly one that
// contains want.
func checkProblems(t *testing.T, problems []string, want string) {
	t.Helper()
	switch {
	case want == "" && len(problems) > 0:
		t.Errorf("unexpected problems: %q", problems)
	case want != "" && (len(problems) != 1 || !strings.Contains(problems[0], want)):
		t.Errorf("problems = %q, want one containing %q", problems, want)
	}
}
