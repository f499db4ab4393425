package spec

import (
	"fmt"
	"strings"

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
