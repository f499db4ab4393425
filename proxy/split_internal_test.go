package proxy

import (
	"maps"
	"testing"
)

func TestParseSplit(t *testing.T) {
	tests := []struct {
		in   string
		want split
	}{
		{"", split{}},
		{"canary", split{canary: true}},
		{" canary ", split{canary: true}},
		{"30;10.0.0.5:23001", split{weight: 30, next: map[string]bool{"10.0.0.5:23001": true}}},
		{"100;10.0.0.5:23001, 10.0.0.6:23002", split{weight: 100, next: map[string]bool{"10.0.0.5:23001": true, "10.0.0.6:23002": true}}},
		{"0;a:1", split{weight: 0, next: map[string]bool{"a:1": true}}},
		{"30;", split{}},     // no containers: no split
		{"30", split{}},      // no list
		{"x;a:1", split{}},   // no weight
		{"101;a:1", split{}}, // past 100
		{"-1;a:1", split{}},  // below 0
		{"Canary", split{}},  // only the exact word
		{"50;a:1,,b:2", split{weight: 50, next: map[string]bool{"a:1": true, "b:2": true}}},
		{"10;function=fn--canary", split{weight: 10, function: "fn--canary"}},
		{"100;function=ws--app-web--canary", split{weight: 100, function: "ws--app-web--canary"}},
		{"10;function=", split{}},         // no function
		{"10;function=Bad_Name", split{}}, // not a function's name
	}
	for _, tt := range tests {
		got := parseSplit(tt.in)
		if got.canary != tt.want.canary || got.function != tt.want.function || got.weight != tt.want.weight || !maps.Equal(got.next, tt.want.next) {
			t.Errorf("parseSplit(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
	if got := parseSplit(SplitFunctionHeader(25, "fn--canary")); got.weight != 25 || got.function != "fn--canary" {
		t.Errorf("parseSplit(SplitFunctionHeader(25, fn--canary)) = %+v", got)
	}
	if got := parseSplit(SplitHeader(25, []string{"a:1", "b:2"})); got.weight != 25 || len(got.next) != 2 {
		t.Errorf("parseSplit(SplitHeader(25, a:1 b:2)) = %+v", got)
	}
}

func TestTurn(t *testing.T) {
	for _, tt := range []struct{ weight, n, want int }{
		{0, 100, 0}, {10, 100, 10}, {10, 1000, 100}, {25, 100, 25}, {33, 300, 99}, {50, 10, 5}, {100, 7, 7},
	} {
		acc, got := 0, 0
		for range tt.n {
			if turn(&acc, tt.weight) {
				got++
			}
		}
		if got != tt.want {
			t.Errorf("turn at weight %d over %d requests: %d to the new containers, want %d", tt.weight, tt.n, got, tt.want)
		}
	}
	// Spread evenly: at 10 %, every tenth.
	acc := 0
	for i := 1; i <= 30; i++ {
		if got, want := turn(&acc, 10), i%10 == 0; got != want {
			t.Fatalf("turn #%d at 10%% = %v, want %v", i, got, want)
		}
	}
}

func TestSetHas(t *testing.T) {
	next := map[string]bool{"new:1": true}
	tests := []struct {
		s      set
		addr   string
		canary bool
		want   bool
	}{
		{set{kind: setLive}, "old:1", false, true},
		{set{kind: setLive}, "new:1", true, false},
		{set{kind: setCanary}, "new:1", true, true},
		{set{kind: setCanary}, "old:1", false, false},
		{set{kind: setNext, next: next}, "new:1", true, true},
		{set{kind: setNext, next: next}, "new:1", false, true}, // promoted: still new
		{set{kind: setNext, next: next}, "old:1", false, false},
		{set{kind: setRest, next: next}, "old:1", false, true},
		{set{kind: setRest, next: next}, "new:1", false, false},  // promoted: never old
		{set{kind: setRest, next: next}, "other:1", true, false}, // a canary not in the split
	}
	for _, tt := range tests {
		if got := tt.s.has(tt.addr, tt.canary); got != tt.want {
			t.Errorf("set %d %v has(%q, canary %v) = %v, want %v", tt.s.kind, tt.s.next, tt.addr, tt.canary, got, tt.want)
		}
	}
}
