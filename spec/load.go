package spec

import (
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/bundle"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

type file struct {
	Apps   []*App   `hcl:"app,block"`
	Remain hcl.Body `hcl:",remain"`
}

// evalContext is what spec expressions may refer to: `port` (see
// PortPlaceholder), `host` (see HostPlaceholder) and `spec_dir`, the
// directory of the function's files, for files that sit beside the spec
// (`command = "${spec_dir}/server.js"`; see SpecDirPlaceholder).
func evalContext(string) *hcl.EvalContext {
	return &hcl.EvalContext{Variables: map[string]cty.Value{
		"port":     cty.StringVal(PortPlaceholder),
		"host":     cty.StringVal(HostPlaceholder),
		"spec_dir": cty.StringVal(SpecDirPlaceholder),
	}}
}

// LoadFile reads and loads the spec at path. See Parse.
func LoadFile(path string) (*App, []byte, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read spec file",
			Detail:   err.Error() + ". Check the path and that the file is readable.",
		}}
	}
	app, diags := Parse(src, path)
	return app, src, diags
}

// Parse loads the app spec in src (named filename in diagnostics) and
// validates it. It reports every problem it finds in one pass; the app is
// usable only when diags.HasErrors() is false.
//
// A spec past one of CheckBounds' limits is refused before it is parsed,
// and at most MaxDiagnostics diagnostics are returned (then one that says
// how many more there were).
func Parse(src []byte, filename string) (*App, hcl.Diagnostics) {
	if diags := CheckBounds(src, filename); diags.HasErrors() {
		return nil, diags
	}
	app, diags := parse(src, filename)
	return app, capDiags(diags)
}

func parse(src []byte, filename string) (*App, hcl.Diagnostics) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	var root file
	diags = append(diags, gohcl.DecodeBody(f.Body, evalContext(filename), &root)...)
	if root.Remain != nil {
		// Only blocks are allowed at the top level; anything else is unknown.
		_, rd := root.Remain.Content(&hcl.BodySchema{})
		diags = append(diags, rd...)
	}
	switch len(root.Apps) {
	case 0:
		if !diags.HasErrors() {
			diags = append(diags, diagNoApp(hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}))
		}
		return nil, diags
	case 1:
	default:
		for _, extra := range root.Apps[1:] {
			diags = append(diags, diagExtraApp(extra.DefRange, root.Apps[0].DefRange))
		}
	}
	app := root.Apps[0]
	diags = append(diags, validate(app)...)
	return app, diags
}

var nameRE = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s may name an app, function, workspace,
// environment or label: a DNS label without double hyphens, which caravan
// keeps for separating the parts of a hostname.
func ValidName(s string) bool {
	return nameRE.MatchString(s) && !strings.Contains(s, "--")
}

func validateDeploy(d *Deploy) hcl.Diagnostics {
	var diags hcl.Diagnostics
	switch d.Strategy {
	case "", StrategyRolling, StrategyRecreate, StrategyCanary, StrategyBlueGreen:
	default:
		diags = append(diags, diagBadStrategy(d.StrategyRange, d.Strategy))
	}
	canary := d.Strategy == StrategyCanary
	if d.Canaries != nil {
		switch {
		case !canary:
			diags = append(diags, diagCanaryOnly(d.CanariesRange, "canaries"))
		case *d.Canaries < 1:
			diags = append(diags, diagBadCanaries(d.CanariesRange, *d.Canaries))
		}
	}
	if d.Traffic != nil {
		switch {
		case !canary:
			diags = append(diags, diagCanaryOnly(d.TrafficRange, "traffic"))
		case *d.Traffic < 1 || *d.Traffic > 99:
			diags = append(diags, diagBadTraffic(d.TrafficRange, *d.Traffic))
		}
	}
	if d.PromoteAfter != "" {
		if !canary {
			diags = append(diags, diagCanaryOnly(d.PromoteAfterRange, "promote_after"))
		} else if p, err := time.ParseDuration(d.PromoteAfter); err != nil || p <= 0 {
			diags = append(diags, diagBadPromoteAfter(d.PromoteAfterRange, d.PromoteAfter))
		}
	}
	return diags
}

func validate(app *App) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if !ValidName(app.Name) {
		diags = append(diags, diagBadName(app.NameRange, "app", app.Name))
	}
	switch {
	case app.Workspace == "":
		diags = append(diags, diagMissingWorkspace(app.DefRange))
	case !ValidName(app.Workspace):
		diags = append(diags, diagBadName(app.WorkspaceRange, "workspace", app.Workspace))
	}
	if app.Environment != "" && !ValidName(app.Environment) {
		diags = append(diags, diagBadName(app.EnvironmentRange, "environment", app.Environment))
	}
	if d := app.Deploy; d != nil {
		diags = append(diags, validateDeploy(d)...)
	}
	if f := app.Files; f != nil {
		diags = append(diags, validateFiles(f)...)
	}
	if len(app.Functions) == 0 {
		diags = append(diags, diagNoFunctions(app.DefRange))
	} else if !slices.ContainsFunc(app.Functions, (*Function).LongRunning) {
		diags = append(diags, diagOnlyScheduled(app.DefRange))
	}
	seen := map[string]*Function{}
	hosts := map[string]string{}
	for _, fn := range app.Functions {
		if first, dup := seen[fn.Name]; dup {
			diags = append(diags, diagDuplicateFunction(fn.NameRange, fn.Name, first.NameRange))
		} else {
			seen[fn.Name] = fn
		}
		diags = append(diags, validateFunction(fn)...)
		if fn.Web != nil {
			type claim struct {
				host string
				rng  hcl.Range
			}
			var claims []claim
			for _, d := range fn.Web.CustomDomains {
				// Compared as the router serves them: lower-case, no final dot.
				claims = append(claims, claim{strings.ToLower(strings.TrimSuffix(d, ".")), fn.Web.CustomDomainsRange})
			}
			// The label, or <app>-<function> without one, names the
			// function's hostname, Consul service and Traefik router.
			name, rng := app.Name+"-"+fn.Name, fn.NameRange
			if fn.Web.Label != "" {
				name, rng = fn.Web.Label, fn.Web.LabelRange
			}
			claims = append(claims, claim{"label " + strings.ToLower(name), rng})
			for _, c := range claims {
				if other, dup := hosts[c.host]; dup && other != fn.Name {
					diags = append(diags, diagDuplicateDomain(c.rng, strings.TrimPrefix(c.host, "label "), other))
				}
				hosts[c.host] = fn.Name
			}
		}
	}
	return diags
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validateFunction(fn *Function) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if !ValidName(fn.Name) {
		diags = append(diags, diagBadName(fn.NameRange, "function", fn.Name))
	}

	driver := fn.TaskDriver()
	switch driver {
	case DriverRawExec, DriverExec:
		if fn.Command == "" && fn.Image == "" {
			diags = append(diags, diagNothingToRun(fn.DefRange, fn.Name))
		} else if fn.Command == "" {
			diags = append(diags, diagDriverNeeds(fn.DriverRange, driver, "command"))
		}
	case DriverDocker:
		if fn.Image == "" {
			rng := fn.DriverRange
			if fn.Driver == "" {
				rng = fn.DefRange
			}
			diags = append(diags, diagDriverNeeds(rng, driver, "image"))
		}
	default:
		diags = append(diags, diagBadDriver(fn.DriverRange, fn.Driver))
	}
	if fn.Command != "" && fn.Image != "" {
		diags = append(diags, diagCommandAndImage(fn.ImageRange, fn.Name))
	}

	names := make([]string, 0, len(fn.Env))
	for k := range fn.Env {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		switch {
		case !envNameRE.MatchString(k):
			diags = append(diags, diagBadEnvName(fn.EnvRange, k))
		case k == "PORT":
			diags = append(diags, diagReservedEnv(fn.EnvRange, k))
		}
	}

	if r := fn.Resources; r != nil {
		if r.CPU != nil && (*r.CPU < 1 || *r.CPU > 1_000_000) {
			diags = append(diags, diagOutOfRange(r.CPURange, "cpu", *r.CPU, 1, 1_000_000))
		}
		if r.Memory != nil && (*r.Memory < 10 || *r.Memory > 4_194_304) {
			diags = append(diags, diagOutOfRange(r.MemoryRange, "memory", *r.Memory, 10, 4_194_304))
		}
		if r.GPU != nil {
			req, d := parseGPU(r.GPU, evalContext(fn.DefRange.Filename))
			diags = append(diags, d...)
			r.GPURequest = req
		}
	}

	diags = append(diags, validateScaling(fn)...)

	if fn.Schedule != "" && fn.Period != "" {
		diags = append(diags, diagScheduleAndPeriod(fn.PeriodRange))
	}
	if fn.Schedule != "" {
		if why := checkCron(fn.Schedule); why != "" {
			diags = append(diags, diagBadSchedule(fn.ScheduleRange, fn.Schedule, why))
		}
	}
	if fn.Period != "" {
		if d, err := time.ParseDuration(fn.Period); err != nil || d < time.Minute {
			diags = append(diags, diagBadPeriod(fn.PeriodRange, fn.Period))
		} else if _, ok := periodCron(d); !ok {
			diags = append(diags, diagPeriodNotCron(fn.PeriodRange, fn.Period))
		}
	}
	if fn.Scheduled() && fn.Web != nil {
		diags = append(diags, diagWebOnScheduled(fn.Web.DefRange, fn.Name))
	}
	if fn.Isolated && !fn.Callable {
		diags = append(diags, diagIsolatedNotCallable(fn.IsolatedRange, fn.Name))
	}
	if e := fn.Enter; e != nil {
		switch {
		case !fn.Callable:
			diags = append(diags, diagEnterNotWarm(e.DefRange, fn.Name, "is not callable", "Add callable = true, or remove the enter block."))
		case fn.Isolated:
			diags = append(diags, diagEnterNotWarm(e.DefRange, fn.Name, "is isolated (isolated = true: a container per call)", "Remove isolated = true, or remove the enter block."))
		case driver == DriverDocker:
			diags = append(diags, diagEnterNotWarm(e.DefRange, fn.Name, "runs on docker, whose callables are isolated (a container per call)", "Use driver raw_exec or exec, or remove the enter block."))
		}
		e.Ready = DefaultReadyTimeout
		if e.ReadyTimeout != "" {
			if d, ok := boundedDuration(e.ReadyTimeout); ok {
				e.Ready = d
			} else {
				diags = append(diags, diagBadDuration(e.ReadyTimeoutRange, "ready_timeout", e.ReadyTimeout))
			}
		}
	}
	if fn.Callable {
		if fn.Web != nil {
			diags = append(diags, diagWebOnCallable(fn.Web.DefRange, fn.Name))
		}
		if fn.Schedule != "" {
			diags = append(diags, diagScheduleOnCallable(fn.ScheduleRange, fn.Name, "schedule"))
		}
		if fn.Period != "" {
			diags = append(diags, diagScheduleOnCallable(fn.PeriodRange, fn.Name, "period"))
		}
	}

	if w := fn.Web; w != nil {
		diags = append(diags, validateWeb(fn, driver)...)
	}
	if f := fn.Files; f != nil {
		diags = append(diags, validateFiles(f)...)
	}
	return diags
}

// validateFiles checks a files block's patterns: .gitignore's syntax,
// relative to the spec's directory, and no "!" in include.
func validateFiles(f *Files) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, list := range []struct {
		patterns []string
		rng      hcl.Range
		include  bool
	}{{f.Include, f.IncludeRange, true}, {f.Exclude, f.ExcludeRange, false}} {
		for _, p := range list.patterns {
			pat, err := bundle.ParsePattern(p)
			switch {
			case err != nil:
				diags = append(diags, diagBadFilesPattern(list.rng, p, err.Error()))
			case pat == nil:
				diags = append(diags, diagBadFilesPattern(list.rng, p, "it is empty or a comment"))
			case list.include && pat.Negated():
				diags = append(diags, diagBadFilesPattern(list.rng, p, `include takes no "!": leave the file out of include, or list it in exclude`))
			case slices.Contains(strings.Split(strings.Trim(p, "/"), "/"), ".."):
				diags = append(diags, diagBadFilesPattern(list.rng, p, "a bundle holds only files under the spec's directory"))
			}
		}
	}
	return diags
}

func validateWeb(fn *Function, driver string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	w := fn.Web
	if w.Port != nil {
		if *w.Port < 1 || *w.Port > 65535 {
			diags = append(diags, diagOutOfRange(w.PortRange, "port", *w.Port, 1, 65535))
		} else if driver != DriverDocker {
			diags = append(diags, diagPortOnNonDocker(w.PortRange, driver))
		}
	} else if driver == DriverDocker {
		diags = append(diags, diagDockerNeedsPort(w.DefRange, fn.Name))
	}
	if w.RateLimit != nil && (*w.RateLimit < 0 || *w.RateLimit > 1_000_000) {
		diags = append(diags, diagOutOfRange(w.RateLimitRange, "rate_limit", *w.RateLimit, 0, 1_000_000))
	}
	if w.Burst != nil {
		rate, _ := w.Limits()
		if *w.Burst < 1 || *w.Burst > 10_000_000 {
			diags = append(diags, diagOutOfRange(w.BurstRange, "burst", *w.Burst, 1, 10_000_000))
		} else if rate == 0 {
			diags = append(diags, diagBurstWithoutRate(w.BurstRange))
		}
	}
	if w.MaxBodySize != "" {
		if _, err := ParseSize(w.MaxBodySize); err != nil {
			diags = append(diags, diagBadSize(w.MaxBodySizeRange, w.MaxBodySize))
		}
	}
	if w.Label != "" && !ValidName(w.Label) {
		diags = append(diags, diagBadName(w.LabelRange, "label", w.Label))
	}
	if w.HealthPath != "" {
		if why := checkHealthPath(w.HealthPath); why != "" {
			diags = append(diags, diagBadHealthPath(w.HealthPathRange, w.HealthPath, why))
		}
	}
	for _, d := range w.CustomDomains {
		if !ValidDomain(d) {
			diags = append(diags, diagBadDomain(w.CustomDomainsRange, d))
		}
	}
	return diags
}

// checkHealthPath says why p is not an origin-form request target (RFC
// 9112 3.2.1: an absolute path and an optional query), or "". The path is
// appended to the function's own URL, so anything that could name
// another host, scheme or port is refused, and so is what clients parse
// differently (backslashes, spaces, control characters, fragments).
func checkHealthPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "it does not start with /"
	case strings.HasPrefix(p, "//"):
		return "it starts with //, which names a host"
	case len(p) > 1024:
		return "it is longer than 1024 bytes"
	case strings.ContainsAny(p, "\\#"):
		return "it holds a backslash or a #"
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f || r > 0x7e {
			return "it holds a space, a control character or a character that is not ASCII (percent-encode it)"
		}
	}
	u, err := url.ParseRequestURI(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" || u.User != nil {
		return "it is not a path"
	}
	return ""
}

var hostLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidDomain reports whether d is a hostname with at least two labels,
// optionally starting with a "*." wildcard label.
func ValidDomain(d string) bool {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	d = strings.TrimPrefix(d, "*.")
	if len(d) > 253 {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !hostLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

var gpuModelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)

// parseGPU decodes Modal's gpu forms from expr.
func parseGPU(expr hcl.Expression, ctx *hcl.EvalContext) (*GPURequest, hcl.Diagnostics) {
	val, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	rng := expr.Range()
	if val.IsNull() {
		return nil, nil
	}
	var items []string
	ty := val.Type()
	switch {
	case ty == cty.String:
		items = []string{val.AsString()}
	case ty.IsTupleType() || ty.IsListType():
		for it := val.ElementIterator(); it.Next(); {
			_, v := it.Element()
			if v.IsNull() || v.Type() != cty.String {
				return nil, hcl.Diagnostics{diagBadGPU(rng, "a list with a non-string entry", "Every entry of a gpu list is a string")}
			}
			items = append(items, v.AsString())
		}
		if len(items) == 0 {
			return nil, hcl.Diagnostics{diagBadGPU(rng, "an empty list", "A gpu list names at least one model")}
		}
	default:
		return nil, hcl.Diagnostics{diagBadGPU(rng, "a "+ty.FriendlyName(), "gpu is a string or a list of strings")}
	}

	req := &GPURequest{}
	for i, item := range items {
		model, count := item, 1
		if m, c, ok := strings.Cut(item, ":"); ok {
			n, err := strconv.Atoi(c)
			if err != nil || n < 1 || n > 8 {
				return nil, hcl.Diagnostics{diagBadGPU(rng, strconv.Quote(item), "The count after ':' is a whole number from 1 to 8")}
			}
			model, count = m, n
		}
		if !gpuModelRE.MatchString(model) {
			return nil, hcl.Diagnostics{diagBadGPU(rng, strconv.Quote(item), "A GPU model is letters, digits and hyphens")}
		}
		if strings.EqualFold(model, "any") {
			if len(items) > 1 {
				return nil, hcl.Diagnostics{diagBadGPU(rng, strconv.Quote(item), `"any" already takes every model, so it stands alone`)}
			}
		} else {
			req.Models = append(req.Models, strings.ToUpper(model))
		}
		if i > 0 && count != req.Count {
			return nil, hcl.Diagnostics{diagBadGPU(rng, strconv.Quote(item), "Every entry of a gpu list asks for the same count")}
		}
		req.Count = count
	}
	return req, nil
}

// validateScaling checks min_containers, max_containers and the autoscaling
// settings of fn, and fills fn.Scaling for a long-running function. The
// settings beyond the container counts are read by caravan's proxy, which
// sees only web requests: on any other function they are errors.
func validateScaling(fn *Function) hcl.Diagnostics {
	var diags hcl.Diagnostics
	sc := Scaling{
		MinContainers: 1, ScaledownWindow: DefaultScaledownWindow,
		MaxInputs: DefaultMaxInputs, QueueMax: DefaultQueueMax, QueueTimeout: DefaultQueueTimeout,
		DrainTimeout: DefaultDrainTimeout,
	}
	if fn.MinContainers != nil {
		switch n := *fn.MinContainers; {
		case n < 0 || n > 1000:
			diags = append(diags, diagOutOfRange(fn.MinContainersRange, "min_containers", n, 0, 1000))
		case n == 0:
			sc.MinContainers = 0
			if (fn.Web == nil || !fn.LongRunning()) && !fn.Warm() {
				diags = append(diags, diagScaleToZero(fn.MinContainersRange, "caravan scales a function by the web requests it serves, and this one serves none"))
			}
		default:
			sc.MinContainers = n
		}
	}
	sc.MaxContainers = max(sc.MinContainers, 1)
	maxSet := false
	if fn.MaxContainers != nil {
		switch n := *fn.MaxContainers; {
		case n < 1 || n > 1000:
			diags = append(diags, diagOutOfRange(fn.MaxContainersRange, "max_containers", n, 1, 1000))
		case n < sc.MinContainers:
			diags = append(diags, diagMaxBelowMin(fn.MaxContainersRange, n, sc.MinContainers))
		default:
			sc.MaxContainers, maxSet = n, true
		}
	}

	web := fn.Web != nil && fn.LongRunning()
	// A warm callable scales on its queue's depth: its workers take
	// min_containers, max_containers and scaledown_window too.
	warm := fn.Warm()
	// needsWeb reports a setting on a function the proxy never sees.
	needsWeb := func(rng hcl.Range, what string) bool {
		if !web {
			diags = append(diags, diagScalingNeedsWeb(rng, what, fn.Name))
		}
		return web
	}
	// needsRoom reports a setting that scales a function whose count
	// cannot change.
	needsRoom := func(rng hcl.Range, attr string) {
		if sc.MaxContainers <= sc.MinContainers && (maxSet || fn.MaxContainers == nil) {
			diags = append(diags, diagNoRoomToScale(rng, attr, sc.MinContainers, sc.MaxContainers, maxSet))
		}
	}
	if fn.BufferContainers != nil && needsWeb(fn.BufferContainersRange, "buffer_containers") {
		switch n := *fn.BufferContainers; {
		case n < 0 || n > 1000:
			diags = append(diags, diagOutOfRange(fn.BufferContainersRange, "buffer_containers", n, 0, 1000))
		case n > sc.MaxContainers:
			diags = append(diags, diagBufferAboveMax(fn.BufferContainersRange, n, sc.MaxContainers))
		default:
			sc.BufferContainers = n
			if n > 0 {
				needsRoom(fn.BufferContainersRange, "buffer_containers")
			}
		}
	}
	if fn.ScaledownWindow != "" && (warm || needsWeb(fn.ScaledownWindowRange, "scaledown_window")) {
		if d, ok := boundedDuration(fn.ScaledownWindow); !ok {
			diags = append(diags, diagBadDuration(fn.ScaledownWindowRange, "scaledown_window", fn.ScaledownWindow))
		} else {
			sc.ScaledownWindow = d
			needsRoom(fn.ScaledownWindowRange, "scaledown_window")
		}
	}
	if fn.DrainTimeout != "" && needsWeb(fn.DrainTimeoutRange, "drain_timeout") {
		if d, ok := boundedDuration(fn.DrainTimeout); !ok {
			diags = append(diags, diagBadDuration(fn.DrainTimeoutRange, "drain_timeout", fn.DrainTimeout))
		} else {
			sc.DrainTimeout = d
			needsRoom(fn.DrainTimeoutRange, "drain_timeout")
		}
	}
	if c := fn.Concurrency; c != nil && fn.Callable && c.TargetInputs == nil {
		if c.MaxInputs != nil {
			if n := *c.MaxInputs; n < 1 || n > 1000 {
				diags = append(diags, diagOutOfRange(c.MaxInputsRange, "max_inputs", n, 1, 1000))
			} else {
				sc.MaxInputs = n
			}
		}
	} else if c != nil && needsWeb(c.DefRange, "A concurrency block") {
		if c.MaxInputs != nil {
			if n := *c.MaxInputs; n < 1 || n > 1000 {
				diags = append(diags, diagOutOfRange(c.MaxInputsRange, "max_inputs", n, 1, 1000))
			} else {
				sc.MaxInputs = n
			}
		}
		sc.TargetInputs = sc.MaxInputs
		if c.TargetInputs != nil {
			switch n := *c.TargetInputs; {
			case n < 1 || n > 1000:
				diags = append(diags, diagOutOfRange(c.TargetInputsRange, "target_inputs", n, 1, 1000))
			case n > sc.MaxInputs:
				diags = append(diags, diagTargetAboveMax(c.TargetInputsRange, n, sc.MaxInputs))
			default:
				sc.TargetInputs = n
			}
		}
	}
	if sc.TargetInputs == 0 {
		sc.TargetInputs = sc.MaxInputs
	}
	if q := fn.Queue; q != nil && needsWeb(q.DefRange, "A queue block") {
		if q.MaxRequests != nil {
			if n := *q.MaxRequests; n < 1 || n > 100_000 {
				diags = append(diags, diagOutOfRange(q.MaxRequestsRange, "max_requests", n, 1, 100_000))
			} else {
				sc.QueueMax = n
			}
		}
		if q.Timeout != "" {
			if d, ok := boundedDuration(q.Timeout); !ok {
				diags = append(diags, diagBadDuration(q.TimeoutRange, "timeout", q.Timeout))
			} else {
				sc.QueueTimeout = d
			}
		}
	}
	if fn.LongRunning() {
		fn.Scaling = &sc
	}
	return diags
}

// boundedDuration parses a scaling duration: from MinScalingDuration to
// MaxScalingDuration, in whole milliseconds or coarser.
func boundedDuration(s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	if err != nil || d < MinScalingDuration || d > MaxScalingDuration {
		return 0, false
	}
	return d, true
}

// Bounds of scaledown_window and a queue's timeout.
const (
	MinScalingDuration = time.Second
	MaxScalingDuration = time.Hour
)
