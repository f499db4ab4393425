package jobs

import "testing"

func TestNamespaceOfJob(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{JobID("acme", "", "shop"), "caravan-acme"},
		{JobID("acme", "prod", "shop"), "caravan-acme"},
		{JobID("acme-prod", "", "shop"), "caravan-acme-prod"},
		{JobID("e2e", "", "web") + ServeSuffix, "caravan-e2e"},
		{PeriodicID(JobID("ml", "staging", "train"), "nightly"), "caravan-ml"},
		{PeriodicID(JobID("ml", "", "train"), "nightly") + "/periodic-1764633600", "caravan-ml"},
		{CallableID(JobID("dev", "", "json"), "sum") + "/dispatch-1764633600-3f2a1b4c", "caravan-dev"},
		{"traefik", ""},
		{"--x", ""},
		{"a/b--c", ""},
	} {
		if got := NamespaceOfJob(tc.id); got != tc.want {
			t.Errorf("NamespaceOfJob(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}
