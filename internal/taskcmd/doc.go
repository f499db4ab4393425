// Package taskcmd holds the commands that run inside Nomad tasks rather
// than for people: `task` (the drain supervisor of autoscaled web
// functions, agent.Supervisor) and `worker` (a callable function's queue
// worker). Both mains import them: cmd/caravan (`caravan task`, `caravan
// worker`, for existing jobs and --agent-command) and cmd/caravan-agent,
// the small binary caravan server serves to tasks (package agent), which
// has nothing else and so none of the server's dependencies.
package taskcmd
