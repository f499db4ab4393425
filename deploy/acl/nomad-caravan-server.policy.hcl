# Nomad ACL policy of caravan server (its autoscaler included): exactly
# what its code calls, in the namespaces of caravan's workspaces
# (caravan-<workspace>, see README "Workspaces are Nomad namespaces").
#
#   nomad acl policy apply -description "caravan server" caravan-server nomad-caravan-server.policy.hcl
#   nomad acl token create -name "caravan server" -policy caravan-server
#
# Every call, and the capability Nomad checks for it (Nomad 1.11):
#
#   Jobs().Info, Summary, Allocations, LatestDeployment   read-job
#   Jobs().ScaleStatus (autoscaler)                       read-job
#   Jobs().ListOptions (prefix, meta)                     list-jobs
#   Jobs().PlanOpts                                       submit-job
#   Jobs().RegisterOpts, Revert, Deregister (purge)       submit-job
#   Jobs().PeriodicForce (caravan run)                    submit-job
#   Jobs().Dispatch (caravan call)                        dispatch-job
#   Jobs().Scale (autoscaler)                             scale-job
#   Deployments().Info, Allocations                       read-job
#   Deployments().Fail, PromoteAll                        submit-job
#   Evaluations().Info                                    read-job
#   Allocations().Info                                    read-job
#   AllocFS().ReadAt (a call's output files)              read-fs
#   AllocFS().Logs (caravan app logs, serve)              read-logs
#   Namespaces().Info (does the workspace's exist?)       any capability in it
#
# Not granted on purpose: Jobs().ListOptions in namespace default, which
# caravan server tries once at start to name jobs from before workspaces
# had namespaces (README); refused, it logs that at debug level and goes on.
#
# AllocFS first looks the allocation's node up (Nodes().Info) to reach
# its client directly: node read. Without it the request goes through the
# servers, slower but working.
#
# Not here: Namespaces().Register. Creating a namespace takes a management
# token in Nomad, so caravan server with this policy needs each
# workspace's namespace to exist (--create-namespaces off); the operator
# creates them: nomad namespace apply -description "caravan workspace W" caravan-W
namespace "caravan-*" {
  capabilities = ["list-jobs", "read-job", "submit-job", "dispatch-job", "scale-job", "read-fs", "read-logs"]
}

node {
  policy = "read"
}
