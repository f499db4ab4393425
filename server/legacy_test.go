package server

import (
	"slices"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

func TestLegacyJobs(t *testing.T) {
	app := map[string]string{"caravan.app": "shop", "caravan.workspace": "dev"}
	stubs := []*nomad.JobListStub{
		{ID: "dev--shop", Meta: app},
		{ID: "dev.prod--shop--cron--nightly", Meta: app},
		{ID: "dev--shop--cron--nightly/periodic-1764633600", ParentID: "dev--shop--cron--nightly", Meta: app},
		{ID: "traefik"},
		{ID: "other--thing"},
	}
	if got := legacyJobs(stubs); !slices.Equal(got, []string{"dev--shop", "dev.prod--shop--cron--nightly"}) {
		t.Errorf("legacyJobs = %q", got)
	}
}
