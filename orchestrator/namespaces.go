package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// Namespaces makes sure the Nomad namespace of a workspace's jobs
// (jobs.Namespace) exists before NomadClient plans or registers one of
// them: once per namespace and server, since namespaces are not deleted
// under a running caravan.
type Namespaces struct {
	// Create creates a missing namespace. Nomad lets only a management
	// token do that; without Create a missing namespace is a
	// *NamespaceMissingError that says how to create it.
	Create bool
	known  sync.Map // namespace name → struct{}
}

// Ensure makes sure namespace ns of workspace exists.
func (n *Namespaces) Ensure(ctx context.Context, c *nomad.Client, ns, workspace string) error {
	if _, ok := n.known.Load(ns); ok {
		return nil
	}
	_, _, err := c.Namespaces().Info(ns, q(ctx, "", 0))
	switch {
	case err == nil:
	case statusOf(err) == http.StatusNotFound && !n.Create:
		return &NamespaceMissingError{Namespace: ns, Workspace: workspace}
	case statusOf(err) == http.StatusNotFound:
		_, err := c.Namespaces().Register(&nomad.Namespace{Name: ns, Description: "caravan workspace " + workspace,
			Meta: map[string]string{jobs.MetaWorkspace: workspace}}, w(ctx, ""))
		if err != nil && statusOf(err) == http.StatusForbidden {
			return fmt.Errorf("creating Nomad namespace %s for workspace %q: %w; creating a namespace takes a management token: "+
				"create it with `nomad namespace apply -description \"caravan workspace %s\" %s`, or give caravan server a management token",
				ns, workspace, err, workspace, ns)
		}
		if err != nil {
			return fmt.Errorf("creating Nomad namespace %s for workspace %q: %w", ns, workspace, err)
		}
	default:
		return fmt.Errorf("reading Nomad namespace %s of workspace %q: %w (caravan server's token needs a policy that covers it: deploy/acl/nomad-caravan-server.policy.hcl)",
			ns, workspace, err)
	}
	n.known.Store(ns, struct{}{})
	return nil
}

// statusOf is the HTTP status of a Nomad API error; 0 for another error.
func statusOf(err error) int {
	var re nomad.UnexpectedResponseError
	if errors.As(err, &re) {
		return re.StatusCode()
	}
	return 0
}
