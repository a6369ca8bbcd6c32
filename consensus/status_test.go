package consensus

import (
	"reflect"
	"testing"
)

// The driver publishes the status after every batch of work through
// UpdateStatus, which must give what Status gives while reusing the
// configuration while it is unchanged and the leader's progress map until
// asked to rebuild it.
func TestUpdateStatusReusesWhatDidNotChange(t *testing.T) {
	sc := newScenario(t, 3, nil)
	sc.elect(1)
	r := sc.r(1)

	var s Status
	r.UpdateStatus(&s, false)
	if want := r.Status(); !reflect.DeepEqual(s, want) {
		t.Fatalf("first UpdateStatus\n got %+v\nwant %+v", s, want)
	}
	members, progress := &s.Config.Members[0], reflect.ValueOf(s.Progress).Pointer()

	sc.propose(1, "x")
	sc.stabilize()
	r.UpdateStatus(&s, false)
	if &s.Config.Members[0] != members {
		t.Error("an unchanged configuration was cloned again")
	}
	if reflect.ValueOf(s.Progress).Pointer() != progress {
		t.Error("the progress map was rebuilt without being asked to")
	}
	if s.Commit != r.Status().Commit || s.LastIndex != r.Status().LastIndex {
		t.Errorf("scalars not current: commit %d last %d, want %d %d", s.Commit, s.LastIndex, r.Status().Commit, r.Status().LastIndex)
	}

	r.UpdateStatus(&s, true)
	if want := r.Status(); !reflect.DeepEqual(s, want) {
		t.Fatalf("UpdateStatus with progress\n got %+v\nwant %+v", s, want)
	}
	if reflect.ValueOf(s.Progress).Pointer() == progress {
		t.Error("the progress map was not rebuilt when asked")
	}

	if _, _, _, _, err := r.ProposeConfChange(0, ConfChange{Type: ConfAddLearner, ID: 4, Name: "n4"}); err != nil {
		t.Fatal(err)
	}
	r.UpdateStatus(&s, false)
	if &s.Config.Members[0] == members || len(s.Config.Members) != 4 {
		t.Errorf("a changed configuration was not taken: %v", s.Config)
	}
}
