package spec

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/cronexpr"
)

// checkCron returns why expr is not a cron expression Nomad's periodic jobs
// accept (five fields, or a descriptor such as "@daily"), or "" when it is one.
func checkCron(expr string) string {
	if !strings.HasPrefix(strings.TrimSpace(expr), "@") {
		if n := len(strings.Fields(expr)); n != 5 {
			return fmt.Sprintf("it has %d fields, not 5", n)
		}
	}
	if _, err := cronexpr.Parse(expr); err != nil {
		return err.Error()
	}
	return ""
}

// periodCron turns a period into the cron expression that runs at the same
// times: minutes that divide an hour, or hours that divide a day.
func periodCron(d time.Duration) (string, bool) {
	switch {
	case d < time.Minute || d%time.Minute != 0:
		return "", false
	case d < time.Hour && 60%int(d/time.Minute) == 0:
		return fmt.Sprintf("*/%d * * * *", int(d/time.Minute)), true
	case d == time.Hour:
		return "0 * * * *", true
	case d%time.Hour == 0 && d <= 24*time.Hour && 24%int(d/time.Hour) == 0:
		if d == 24*time.Hour {
			return "0 0 * * *", true
		}
		return fmt.Sprintf("0 */%d * * *", int(d/time.Hour)), true
	}
	return "", false
}

// CronSpec is the cron expression a scheduled function runs on: its
// schedule, or its period as cron; "" for a function with neither.
func (f *Function) CronSpec() string {
	if !f.Scheduled() {
		return ""
	}
	if f.Schedule != "" {
		return f.Schedule
	}
	d, _ := time.ParseDuration(f.Period)
	c, _ := periodCron(d)
	return c
}
