package jobs

import "strings"

// NamespacePrefix starts the Nomad namespace of every workspace.
const NamespacePrefix = "caravan-"

// Namespace is the Nomad namespace of workspace's jobs: caravan-<workspace>
// (a workspace name, at most 63 lower-case letters, digits and hyphens,
// makes a valid namespace name). Every job of the workspace's apps, in
// every environment, is in it, so Nomad's own ACLs can keep workspaces
// apart (deploy/acl grants caravan server caravan-*).
func Namespace(workspace string) string { return NamespacePrefix + workspace }

// WorkspaceOfJob is the workspace in a job ID caravan made (JobID and the
// IDs built on it: periodic, callable, and the runs Nomad launches of
// them, "<id>/periodic-..."): what comes before the first "." or "--".
// ok is false for an ID that is not caravan's.
func WorkspaceOfJob(jobID string) (workspace string, ok bool) {
	ws, _, found := strings.Cut(jobID, "--")
	if !found {
		return "", false
	}
	ws, _, _ = strings.Cut(ws, EnvironmentSeparator)
	if ws == "" || strings.Contains(ws, "/") {
		return "", false
	}
	return ws, true
}

// NamespaceOfJob is the Nomad namespace job jobID lives in: its
// workspace's; "" for an ID that is not caravan's (the client's default
// then applies).
func NamespaceOfJob(jobID string) string {
	ws, ok := WorkspaceOfJob(jobID)
	if !ok {
		return ""
	}
	return Namespace(ws)
}
