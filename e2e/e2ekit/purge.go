package e2ekit

import (
	"strings"
	"testing"

	"github.com/caravanhq/caravan/jobs"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// Purge removes an app's job (in its workspace's namespace) and its
// records in Consul when the test ends: the app's keys, the traffic
// splits a canary or blue-green test left behind, and its host claims.
func Purge(t testing.TB, n *nomad.Client, c *consul.Client, jobID string) {
	t.Cleanup(func() {
		if _, _, err := n.Jobs().Deregister(jobID, true, &nomad.WriteOptions{Namespace: jobs.NamespaceOfJob(jobID)}); err != nil {
			t.Logf("purging %s: %v", jobID, err)
		}
		if _, err := c.KV().DeleteTree("caravan/apps/"+jobID+"/", nil); err != nil {
			t.Logf("deleting records of %s: %v", jobID, err)
		}
		splits, _, _ := c.KV().Keys("traefik/", "", nil)
		for _, k := range splits {
			if strings.Contains(k, "/"+jobID+"-") {
				c.KV().Delete(k, nil)
			}
		}
		claims, _, _ := c.KV().List("caravan/hosts/", nil)
		for _, cl := range claims {
			if strings.Contains(string(cl.Value), `"job_id":"`+jobID+`"`) {
				c.KV().Delete(cl.Key, nil)
			}
		}
	})
}
