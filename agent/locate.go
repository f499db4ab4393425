package agent

import (
	"os"
	"path/filepath"
)

// BinaryName is the agent binary's file name (cmd/caravan-agent): what a
// release ships, and `just build` builds, beside caravan. It has only the
// commands that run inside tasks (`task`, `worker`), a fifth of caravan's
// bytes, and a task fetches it at every start. Inside the task it
// unpacks as FileName whatever it was called on the server.
const BinaryName = "caravan-agent"

// LocateBinary is what caravan server serves to tasks when no
// --agent-binary is given, for the server's executable exe: BinaryName
// beside it, when that is an executable regular file (beside true); else
// exe itself, whose `task` and `worker` commands are the same (beside
// false).
func LocateBinary(exe string) (path string, beside bool) {
	p := filepath.Join(filepath.Dir(exe), BinaryName)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return p, true
	}
	return exe, false
}
