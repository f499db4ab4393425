package orchestrator

import (
	"context"
	"crypto/hmac"
	"fmt"
	"strings"

	"github.com/caravanhq/caravan/agent"
	nomad "github.com/hashicorp/nomad/api"
)

// This file authorizes what a task asks of caravan server with the agent
// URLs it was rendered with (package agent): the caravan binary, and
// the drain of its own allocation.

// AgentAccessError is an agent request its URL does not allow.
type AgentAccessError struct{ Why string }

func (e *AgentAccessError) Error() string { return "agent request refused: " + e.Why }

// OpenAgent authorizes an agent request of allocation alloc with a URL
// signed for job (agent.Signature): alloc must be a live allocation of
// job (or of a run of it) whose task group fetches the agent. It returns
// the allocation.
func (o *Orchestrator) OpenAgent(ctx context.Context, job, alloc, sig string) (*nomad.Allocation, error) {
	if job == "" || alloc == "" || sig == "" {
		return nil, &AgentAccessError{Why: "an agent URL names a job, an allocation and a signature"}
	}
	key, err := o.bundleKey(ctx)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(sig), []byte(agent.Signature(key, job))) {
		return nil, &AgentAccessError{Why: "the signature does not match the job"}
	}
	a, err := o.nomad.Allocation(ctx, alloc)
	if err != nil {
		return nil, &AgentAccessError{Why: fmt.Sprintf("allocation %s: %v", alloc, err)}
	}
	if why := allocMayUseAgent(a, job); why != "" {
		return nil, &AgentAccessError{Why: why}
	}
	return a, nil
}

// allocMayUseAgent says why allocation a may not use the agent URLs
// signed for job, or "".
func allocMayUseAgent(a *nomad.Allocation, job string) string {
	switch {
	case a == nil:
		return "no such allocation"
	case a.JobID != job && !strings.HasPrefix(a.JobID, job+"/"):
		return fmt.Sprintf("allocation %s belongs to job %s, not %s", a.ID, a.JobID, job)
	case a.ClientStatus != nomad.AllocClientStatusPending && a.ClientStatus != nomad.AllocClientStatusRunning:
		return fmt.Sprintf("allocation %s is %s", a.ID, a.ClientStatus)
	case a.Job == nil:
		return fmt.Sprintf("allocation %s carries no job", a.ID)
	}
	for _, tg := range a.Job.TaskGroups {
		if tg.Name != nil && *tg.Name == a.TaskGroup && agent.Fetches(tg, job) {
			return ""
		}
	}
	return fmt.Sprintf("allocation %s does not run the caravan agent", a.ID)
}

// usesAgent reports whether any of js fetches the agent.
func usesAgent(js []*nomad.Job) bool {
	for _, j := range js {
		for _, tg := range j.TaskGroups {
			if j.ID != nil && agent.Fetches(tg, *j.ID) {
				return true
			}
		}
	}
	return false
}
