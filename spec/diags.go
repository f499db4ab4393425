package spec

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// One constructor per kind of mistake: each says what is wrong (Summary), how
// to fix it (Detail), and where (Subject).

func diagError(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
}

func diagWarning(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: detail, Subject: &r}
}

func diagNoApp(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Missing app block",
		`A spec file holds exactly one app block, for example:

  app "hello" {
    workspace = "me"
    function "web" { ... }
  }`)
}

func diagExtraApp(rng hcl.Range, first hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "More than one app block",
		fmt.Sprintf("A spec file holds exactly one app; the first is at %s. Move this app to a file of its own.", first))
}

func diagBadName(rng hcl.Range, what, name string) *hcl.Diagnostic {
	return diagError(rng, fmt.Sprintf("Invalid %s name", what),
		fmt.Sprintf("%q cannot be part of a hostname. Use 1 to 63 lower-case letters, digits and single hyphens, starting with a letter and not ending with a hyphen, for example %q.", name, suggestName(name)))
}

func diagMissingWorkspace(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Missing workspace",
		`Set workspace = "<name>" in the app block; it is the first part of every URL the app serves.`)
}

func diagNoFunctions(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "App has no functions",
		`Add at least one function "<name>" { command = "..." } block to the app.`)
}

func diagDuplicateFunction(rng hcl.Range, name string, first hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Duplicate function",
		fmt.Sprintf("A function named %q is already defined at %s. Rename one of them.", name, first))
}

func diagBadStrategy(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Unknown deploy strategy",
		fmt.Sprintf("%q is not a strategy. Use one of %q, %q, %q or %q.", got, StrategyRolling, StrategyRecreate, StrategyCanary, StrategyBlueGreen))
}

func diagCanaryOnly(rng hcl.Range, attr string) *hcl.Diagnostic {
	return diagError(rng, "Canary setting without a canary strategy",
		fmt.Sprintf("%s applies only to canary rollouts. Set strategy = %q in this deploy block, or remove %s.", attr, StrategyCanary, attr))
}

func diagBadCanaries(rng hcl.Range, got int) *hcl.Diagnostic {
	return diagError(rng, "Invalid canaries",
		fmt.Sprintf("A canary version needs at least one container; got %d. Use canaries = 1 or more.", got))
}

func diagBadTraffic(rng hcl.Range, got int) *hcl.Diagnostic {
	return diagError(rng, "Invalid traffic",
		fmt.Sprintf("traffic is the percentage of requests the canaries receive: 1 to 99; got %d. (To send all traffic at once, use strategy = %q.)", got, StrategyBlueGreen))
}

func diagBadPromoteAfter(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Invalid promote_after",
		fmt.Sprintf("%q is not a positive duration. Use a number with a unit, such as \"30s\", \"10m\" or \"1h\"; leave promote_after out to promote with `caravan app promote`.", got))
}

func diagBadDriver(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Unknown driver",
		fmt.Sprintf("%q is not a driver caravan supports. Use %q, %q or %q.", got, DriverRawExec, DriverExec, DriverDocker))
}

func diagNothingToRun(rng hcl.Range, fn string) *hcl.Diagnostic {
	return diagError(rng, "Function has nothing to run",
		fmt.Sprintf("Function %q needs command = \"...\" (raw_exec, exec) or image = \"...\" (docker).", fn))
}

func diagCommandAndImage(rng hcl.Range, fn string) *hcl.Diagnostic {
	return diagError(rng, "Both command and image are set",
		fmt.Sprintf("Function %q sets both. Keep command for raw_exec/exec, or image for docker (pass arguments with args).", fn))
}

func diagDriverNeeds(rng hcl.Range, driver, attr string) *hcl.Diagnostic {
	return diagError(rng, fmt.Sprintf("The %s driver needs %s", driver, attr),
		fmt.Sprintf("Set %s = \"...\", or choose a driver that fits what the function runs.", attr))
}

func diagOutOfRange(rng hcl.Range, attr string, got, lo, hi int) *hcl.Diagnostic {
	return diagError(rng, fmt.Sprintf("Invalid %s", attr),
		fmt.Sprintf("%s is %d; it must be between %d and %d.", attr, got, lo, hi))
}

func diagBurstWithoutRate(rng hcl.Range) *hcl.Diagnostic {
	return diagWarning(rng, "burst without a rate limit",
		"rate_limit = 0 turns the limit off, so burst has no effect. Remove burst, or set rate_limit.")
}

func diagBadSize(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Invalid max_body_size",
		fmt.Sprintf("%q is not a size. Use a whole number with a unit, such as \"10MB\", \"512KiB\" or \"4GiB\".", got))
}

func diagMaxBelowMin(rng hcl.Range, max, min int) *hcl.Diagnostic {
	return diagError(rng, "max_containers below min_containers",
		fmt.Sprintf("max_containers is %d but min_containers is %d. Raise max_containers to at least %d.", max, min, min))
}

func diagScaleToZero(rng hcl.Range, why string) *hcl.Diagnostic {
	return diagWarning(rng, "Scale to zero not yet supported",
		fmt.Sprintf("min_containers = 0 runs one container here: %s. Only web functions scale with their traffic (through caravan's proxy).", why))
}

func diagScalingNeedsWeb(rng hcl.Range, what, fn string) *hcl.Diagnostic {
	return diagError(rng, "Autoscaling setting on a function without web",
		fmt.Sprintf("%s applies to a long-running function with a web block: caravan scales by the requests it serves. Function %q has none; remove it, or add a web block.", what, fn))
}

func diagNoRoomToScale(rng hcl.Range, attr string, min, max int, maxSet bool) *hcl.Diagnostic {
	from := fmt.Sprintf("max_containers is %d", max)
	if !maxSet {
		from = fmt.Sprintf("max_containers is unset, so it is min_containers (%d)", max)
	}
	return diagError(rng, "max_containers needed to scale",
		fmt.Sprintf("%s scales the function, but %s: its count cannot change. Set max_containers above min_containers (%d), or remove %s.", attr, from, min, attr))
}

func diagBufferAboveMax(rng hcl.Range, buffer, max int) *hcl.Diagnostic {
	return diagError(rng, "buffer_containers above max_containers",
		fmt.Sprintf("buffer_containers is %d but at most %d containers run (max_containers). Lower buffer_containers to %d or less, or raise max_containers.", buffer, max, max))
}

func diagTargetAboveMax(rng hcl.Range, target, max int) *hcl.Diagnostic {
	return diagError(rng, "target_inputs above max_inputs",
		fmt.Sprintf("target_inputs is %d but a container takes at most %d requests at once (max_inputs). target_inputs is the load the autoscaler aims for below that limit: lower it to %d or less, or raise max_inputs.", target, max, max))
}

func diagBadDuration(rng hcl.Range, attr, got string) *hcl.Diagnostic {
	return diagError(rng, "Invalid "+attr,
		fmt.Sprintf("%q is not a duration from %s to %s. Use a number with a unit, such as \"30s\", \"2m\" or \"1h\".", got, MinScalingDuration, MaxScalingDuration))
}

func diagBadGPU(rng hcl.Range, got, why string) *hcl.Diagnostic {
	return diagError(rng, "Invalid gpu",
		fmt.Sprintf("%s (got %s). Use \"any\", a model such as \"H100\", a model and count such as \"H100:2\" (1 to 8), or a list of models in order of preference such as [\"H100\", \"A100\"].", why, got))
}

func diagWebOnScheduled(rng hcl.Range, fn string) *hcl.Diagnostic {
	return diagError(rng, "Web block on a scheduled function",
		fmt.Sprintf("Function %q runs on a schedule, so it cannot serve web traffic. Remove the web block, or remove schedule/period and put the schedule in a function of its own.", fn))
}

func diagScheduleAndPeriod(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Both schedule and period are set",
		`Use schedule = "<cron>" for a calendar schedule or period = "<duration>" for a fixed interval, not both.`)
}

func diagBadSchedule(rng hcl.Range, got, why string) *hcl.Diagnostic {
	return diagError(rng, "Invalid schedule",
		fmt.Sprintf("%q is not a cron expression: %s. Use five fields: minute hour day-of-month month day-of-week, for example \"0 3 * * *\".", got, why))
}

func diagBadPeriod(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Invalid period",
		fmt.Sprintf("%q is not a duration of at least one minute. Use a Go duration such as \"5m\" or \"1h30m\".", got))
}

func diagPeriodNotCron(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Period does not divide an hour or a day",
		fmt.Sprintf("%q cannot be run at the same times every day, which Nomad's periodic jobs need. Use a whole number of minutes that divides 60 (1m, 5m, 15m, 30m...) or of hours that divides 24 (1h, 2h, 6h, 12h, 24h), or a cron schedule.", got))
}

func diagOnlyScheduled(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "App has only scheduled or callable functions",
		"caravan runs an app around its long-running functions; add one (a web endpoint, say) or give this app's scheduled and callable functions to an app that has one.")
}

func diagWebOnCallable(rng hcl.Range, fn string) *hcl.Diagnostic {
	return diagError(rng, "Web block on a callable function",
		fmt.Sprintf("Function %q is callable (callable = true), so it runs once per call and cannot serve web traffic. Remove the web block, or remove callable = true to make it a web endpoint.", fn))
}

func diagScheduleOnCallable(rng hcl.Range, fn, attr string) *hcl.Diagnostic {
	return diagError(rng, fmt.Sprintf("%s on a callable function", strings.ToUpper(attr[:1])+attr[1:]),
		fmt.Sprintf("Function %q is callable (callable = true), so it runs when called, not on a schedule. Remove %s, or remove callable = true and call it with `caravan run` instead.", fn, attr))
}

func diagBadEnvName(rng hcl.Range, name string) *hcl.Diagnostic {
	return diagError(rng, "Invalid environment variable name",
		fmt.Sprintf("%q is not a valid variable name. Use letters, digits and underscores, not starting with a digit.", name))
}

func diagReservedEnv(rng hcl.Range, name string) *hcl.Diagnostic {
	return diagError(rng, "Reserved environment variable",
		fmt.Sprintf("caravan sets %s itself. Remove it from env; read it in the process instead.", name))
}

func diagBadHealthPath(rng hcl.Range, got, why string) *hcl.Diagnostic {
	return diagError(rng, "Invalid health_path",
		fmt.Sprintf("%q is not a path on the function's own host: %s. Use a path such as \"/\", \"/healthz\" or \"/healthz?full=1\", without a scheme or a host.", got, why))
}

func diagBadDomain(rng hcl.Range, got string) *hcl.Diagnostic {
	return diagError(rng, "Invalid custom domain",
		fmt.Sprintf("%q is not a hostname. Use a name such as \"api.example.com\", or \"*.example.com\" for every subdomain.", got))
}

func diagDuplicateDomain(rng hcl.Range, host, fn string) *hcl.Diagnostic {
	return diagError(rng, "Hostname claimed twice",
		fmt.Sprintf("%q is already routed to function %q of this app. Each hostname goes to one function.", host, fn))
}

func diagPortOnNonDocker(rng hcl.Range, driver string) *hcl.Diagnostic {
	return diagWarning(rng, "Fixed port with "+driver,
		fmt.Sprintf("With %s every container shares the host's network, so a fixed port allows one container per node. Leave port unset and listen on ${port} or $PORT instead.", driver))
}

func diagDockerNeedsPort(rng hcl.Range, fn string) *hcl.Diagnostic {
	return diagError(rng, "Missing web port",
		fmt.Sprintf("Function %q runs an image; set port in its web block to the port the image listens on.", fn))
}

func diagTooLarge(rng hcl.Range, size int) *hcl.Diagnostic {
	return diagError(rng, "Spec too large",
		fmt.Sprintf("The spec is %d bytes; caravan takes at most %d (%d KiB), since every version's spec is kept in Consul KV. Move large data into files the function reads.", size, MaxSize, MaxSize>>10))
}

func diagTooManyTokens(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Spec too long",
		fmt.Sprintf("The spec has more than %d tokens (names, numbers, strings, operators, punctuation, line ends); this is the first past the limit. Move large data into files the function reads.", MaxTokens))
}

func diagTooDeep(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Nesting too deep",
		fmt.Sprintf("This is more than %d levels deep. Brackets, braces and parentheses, strings and their templates, conditionals and unary operators each count a level; flatten the expression.", MaxNesting))
}

func diagTooManyElements(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Too many elements",
		fmt.Sprintf("The list, object, block or call that starts here has more than %d elements. Move large data into files the function reads.", MaxElements))
}

func diagStringTooLong(rng hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "String too long",
		fmt.Sprintf("The string, name or number that starts here is longer than %d bytes (%d KiB). Move large data into files the function reads.", MaxString, MaxString>>10))
}

func diagTooManyProblems(more int, errors bool) *hcl.Diagnostic {
	sev := hcl.DiagWarning
	if errors {
		sev = hcl.DiagError
	}
	return &hcl.Diagnostic{Severity: sev, Summary: "Too many problems",
		Detail: fmt.Sprintf("%d more problems are not shown (at most %d are). Fix these and validate again.", more, MaxDiagnostics)}
}

// suggestName turns an invalid name into a valid one for the Detail text.
func suggestName(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z') {
		s = "x" + s
	}
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

func diagBadFilesPattern(rng hcl.Range, p, why string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid files pattern", Subject: rng.Ptr(),
		Detail: fmt.Sprintf("%q: %s. Patterns take .gitignore's syntax, relative to the spec's directory: \"src/**\", \"*.py\", \"/build\".", p, why)}
}

func diagIsolatedNotCallable(rng hcl.Range, fn string) *hcl.Diagnostic {
	return diagError(rng, "Isolated on a function that is not callable",
		fmt.Sprintf("Function %q has isolated = true, which runs each call in a container of its own; it applies to callable functions only. Add callable = true, or remove isolated.", fn))
}

func diagEnterNotWarm(rng hcl.Range, fn, why, fix string) *hcl.Diagnostic {
	return diagError(rng, "Enter block on a function without warm workers",
		fmt.Sprintf("Function %q %s. An enter block starts the command once per warm worker and passes it each input; it applies to warm callable functions only. %s", fn, why, fix))
}
