package queue

import (
	"strings"
	"testing"
)

// TestNamesInjective: a function's stream and buckets are named as
// before when no part holds "_", and no two functions share a name.
func TestNamesInjective(t *testing.T) {
	for _, c := range []struct {
		f    Func
		want string
	}{
		{Func{AppJobID: "ws--app", Name: "echo"}, "CALLS_ws--app_echo"},
		{Func{AppJobID: "a_b", Name: "c"}, "CALLS_a__b_-c"},
		{Func{AppJobID: "a", Name: "b_c"}, "CALLS_a_-b__c"},
		{Func{AppJobID: "a_", Name: "b"}, "CALLS_a___-b"},
		{Func{AppJobID: "a", Name: "_b"}, "CALLS_a_-__b"},
	} {
		if got := c.f.Stream(); got != c.want {
			t.Errorf("%+v: stream %q, want %q", c.f, got, c.want)
		}
	}
	parts := []string{"a", "b", "c", "_", "-", "a_b", "b_c", "a_", "_b", "a__b", "a-_b", "a_-b", "_-", "-_", "__", "a--b"}
	seen := map[string]Func{}
	for _, j := range parts {
		for _, n := range parts {
			f := Func{Workspace: "ws", AppJobID: j, Name: n}
			if err := f.Check(); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{f.Stream(), f.InputsBucket(), f.OutputsBucket()} {
				if !nameRE.MatchString(name) {
					t.Errorf("%+v: %q is not letters, digits, - and _", f, name)
				}
			}
			if g, ok := seen[f.Stream()]; ok {
				t.Errorf("%+v and %+v share the stream %q", g, f, f.Stream())
			}
			seen[f.Stream()] = f
			if strings.TrimPrefix(f.InputsBucket(), "in_") != strings.TrimPrefix(f.Stream(), "CALLS_") {
				t.Errorf("%+v: inputs bucket %q apart from its stream %q", f, f.InputsBucket(), f.Stream())
			}
		}
	}
}

// CheckReplicas: 1 to MaxReplicas of an external NATS, 1 of the embedded.
func TestCheckReplicas(t *testing.T) {
	for _, c := range []struct {
		n        int
		external bool
		ok       bool
	}{
		{1, false, true}, {1, true, true}, {3, true, true}, {5, true, true},
		{0, true, false}, {-1, false, false}, {6, true, false}, {3, false, false},
	} {
		if err := CheckReplicas(c.n, c.external); (err == nil) != c.ok {
			t.Errorf("CheckReplicas(%d, external %v): %v, want ok %v", c.n, c.external, err, c.ok)
		}
	}
}
