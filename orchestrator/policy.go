package orchestrator

import (
	"github.com/caravanhq/caravan/spec"
)

// allowed refuses, with a *PolicyError, an app its workspace's policy does
// not allow. It is pure, and prepare calls it before anything is numbered,
// claimed or registered.
func (o *Orchestrator) allowed(app *spec.App) error {
	rules, vs := o.policy.Check(app)
	if len(vs) == 0 {
		return nil
	}
	name := o.policy.Name()
	if rules != nil {
		name = rules.String()
	}
	return &PolicyError{Policy: name, Workspace: app.Workspace, App: app.Name, Violations: vs}
}
