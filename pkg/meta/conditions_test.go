package meta

import (
	"testing"
	"time"
)

func TestSetCondition(t *testing.T) {
	var conds []Condition
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if !SetCondition(&conds, Condition{Type: "Ready", Status: ConditionFalse, Reason: "Starting", LastTransitionTime: t0}) {
		t.Fatal("adding a condition reported no change")
	}
	// Same status, new reason: changed, but the transition time stays.
	if !SetCondition(&conds, Condition{Type: "Ready", Status: ConditionFalse, Reason: "Waiting", LastTransitionTime: t0.Add(time.Hour)}) {
		t.Error("new reason reported no change")
	}
	if c := FindCondition(conds, "Ready"); c.Reason != "Waiting" || !c.LastTransitionTime.Equal(t0) {
		t.Errorf("after a reason change: %+v", c)
	}
	// Identical: no change.
	if SetCondition(&conds, Condition{Type: "Ready", Status: ConditionFalse, Reason: "Waiting"}) {
		t.Error("identical condition reported a change")
	}
	// Status change: transition time moves (to now when not given).
	before := Now()
	if !SetCondition(&conds, Condition{Type: "Ready", Status: ConditionTrue, Reason: "Up"}) {
		t.Error("status change reported no change")
	}
	c := FindCondition(conds, "Ready")
	if c.LastTransitionTime.Before(before) || c.LastTransitionTime.Location() != time.UTC {
		t.Errorf("transition time %v, want now in UTC", c.LastTransitionTime)
	}
	if len(conds) != 1 || !IsConditionTrue(conds, "Ready") {
		t.Errorf("conditions %+v", conds)
	}
	SetCondition(&conds, Condition{Type: "Synced", Status: ConditionUnknown})
	if len(conds) != 2 || IsConditionTrue(conds, "Synced") || IsConditionTrue(conds, "Missing") {
		t.Errorf("conditions %+v", conds)
	}
	if !RemoveCondition(&conds, "Ready") || RemoveCondition(&conds, "Ready") {
		t.Error("RemoveCondition reports wrongly")
	}
	if len(conds) != 1 || conds[0].Type != "Synced" || FindCondition(conds, "Ready") != nil {
		t.Errorf("after removal: %+v", conds)
	}
}
