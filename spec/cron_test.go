package spec

import (
	"testing"
	"time"
)

func TestPeriodCron(t *testing.T) {
	for period, want := range map[string]string{
		"1m": "*/1 * * * *", "5m": "*/5 * * * *", "30m": "*/30 * * * *", "60m": "0 * * * *", "1h": "0 * * * *",
		"2h": "0 */2 * * *", "6h": "0 */6 * * *", "24h": "0 0 * * *",
		"7m": "", "90m": "", "5h": "", "48h": "", "1m30s": "",
	} {
		d, _ := time.ParseDuration(period)
		got, ok := periodCron(d)
		if got != want || ok != (want != "") {
			t.Errorf("periodCron(%s) = %q, %v; want %q", period, got, ok, want)
		}
		if ok && checkCron(got) != "" {
			t.Errorf("periodCron(%s) = %q, which Nomad would refuse: %s", period, got, checkCron(got))
		}
	}
}
