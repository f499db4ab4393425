package orchestrator

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// AppSummary is one app as `caravan app list` shows it.
type AppSummary struct {
	Workspace   string            `json:"workspace"`
	Environment string            `json:"environment,omitempty"`
	App         string            `json:"app"`
	JobID       string            `json:"job_id"`
	Version     int               `json:"version"`
	State       string            `json:"state"`
	Functions   []FunctionSummary `json:"functions"`
	DeployedAt  time.Time         `json:"deployed_at"`
}

// FunctionSummary is one function of a listed app.
type FunctionSummary struct {
	Name    string `json:"name"`
	URL     string `json:"url,omitempty"`
	Running int    `json:"running"`
}

// Apps lists the apps the caller may see, sorted by workspace and name.
func (o *Orchestrator) Apps(ctx context.Context, caller Caller) ([]AppSummary, error) {
	stubs, _, err := o.nomad.Jobs().ListOptions(&nomad.JobListOptions{Fields: &nomad.JobListFields{Meta: true}},
		(&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing Nomad jobs: %w", err)
	}
	var out []AppSummary
	for _, s := range stubs {
		ws, app := s.Meta[jobs.MetaWorkspace], s.Meta[jobs.MetaApp]
		if app == "" || (caller.Workspace != "*" && caller.Workspace != ws) {
			continue
		}
		job, _, err := o.nomad.Jobs().Info(s.ID, (&nomad.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("reading job %s: %w", s.ID, err)
		}
		version, _ := strconv.Atoi(s.Meta[jobs.MetaVersion])
		sum := AppSummary{
			Workspace: ws, Environment: s.Meta[jobs.MetaEnvironment], App: app, JobID: s.ID,
			Version: version, State: appState(s), DeployedAt: time.Unix(0, s.SubmitTime).UTC(),
		}
		for _, tg := range job.TaskGroups {
			fs := FunctionSummary{Name: *tg.Name}
			if s.JobSummary != nil {
				if c, ok := s.JobSummary.Summary[*tg.Name]; ok {
					fs.Running = c.Running
				}
			}
			if len(tg.Services) > 0 {
				fs.URL = o.router.URL(tg.Services[0].Name)
			}
			sum.Functions = append(sum.Functions, fs)
		}
		out = append(out, sum)
	}
	slices.SortFunc(out, func(a, b AppSummary) int {
		if a.Workspace != b.Workspace {
			return cmp.Compare(a.Workspace, b.Workspace)
		}
		return cmp.Compare(a.JobID, b.JobID)
	})
	return out, nil
}

func appState(s *nomad.JobListStub) string {
	switch {
	case s.Stop:
		return "stopped"
	case s.Status == "running":
		return "deployed"
	default:
		return s.Status
	}
}
