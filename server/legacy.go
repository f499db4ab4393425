package server

import (
	"context"
	"time"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// Jobs caravan registered before workspaces had Nomad namespaces of their
// own are in Nomad's default namespace, where caravan no longer looks:
// caravan server names them in its log at start, with what to do (README,
// "Workspaces are Nomad namespaces").

// legacyJobs are the IDs of the apps' jobs among stubs of the default
// namespace: those caravan's meta marks, less the runs Nomad launched of
// periodic and parameterized jobs (their parents are listed).
func legacyJobs(stubs []*nomad.JobListStub) []string {
	var out []string
	for _, j := range stubs {
		if j.Meta[jobs.MetaApp] == "" || j.ParentID != "" {
			continue
		}
		if _, ok := jobs.WorkspaceOfJob(j.ID); ok {
			out = append(out, j.ID)
		}
	}
	return out
}

// warnLegacyJobs logs legacyJobs of Nomad's default namespace. A token
// that may not list it (deploy/acl's policy grants caravan-* only) is
// logged at debug level: its operator created the namespaces anew.
func (s *Server) warnLegacyJobs() {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	stubs, _, err := s.nomad.Jobs().ListOptions(&nomad.JobListOptions{Fields: &nomad.JobListFields{Meta: true}},
		(&nomad.QueryOptions{Namespace: "default"}).WithContext(ctx))
	if err != nil {
		s.log.Debug("not looking for caravan jobs in Nomad's default namespace", "error", err)
		return
	}
	for _, id := range legacyJobs(stubs) {
		s.log.Warn("a caravan job in Nomad's default namespace, from before workspaces had namespaces; caravan no longer manages it: "+
			"deploy the app again (into its workspace's namespace), then stop this one",
			"job", id, "namespace", jobs.NamespaceOfJob(id), "stop_with", "nomad job stop -namespace default -purge "+id)
	}
}
