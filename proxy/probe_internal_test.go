package proxy

import "testing"

func TestContainerReady(t *testing.T) {
	cases := []struct {
		name                  string
		passing, passedBefore bool
		probe                 probeState
		want, wantProbe       bool
	}{
		{"consul passing", true, false, probeNone, true, false},
		{"consul passing, probe failing", true, false, probeFailed, true, false},
		{"consul passing again after a failure", true, true, probeNone, true, false},
		{"starting, not probed yet", false, false, probeNone, false, true},
		{"starting, probe answered 2xx", false, false, probeOK, true, true},
		{"starting, probe failed", false, false, probeFailed, false, true},
		{"starting, probe failed after a 2xx", false, false, probeFailed, false, true},
		{"starting, probes ran out", false, false, probeExpired, false, false},
		{"critical after consul passed it", false, true, probeNone, false, false},
		{"critical after consul passed it, stale 2xx probe", false, true, probeOK, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := containerReady(c.passing, c.passedBefore, c.probe); got != c.want {
				t.Errorf("containerReady(passing %v, passed before %v, %v) = %v, want %v", c.passing, c.passedBefore, c.probe, got, c.want)
			}
			if got := shouldProbe(c.passing, c.passedBefore, "/healthz", c.probe); got != c.wantProbe {
				t.Errorf("shouldProbe(passing %v, passed before %v, %v) = %v, want %v", c.passing, c.passedBefore, c.probe, got, c.wantProbe)
			}
		})
	}
	if shouldProbe(false, false, "", probeNone) {
		t.Error("shouldProbe without a health path = true; the proxy cannot probe what it does not know")
	}
}
