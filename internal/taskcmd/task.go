package taskcmd

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/urfave/cli/v2"
)

// Task is the entrypoint caravan renders for the tasks of
// autoscaled web functions (package agent): not for people.
func Task() *cli.Command {
	return &cli.Command{
		Name:      "task",
		Hidden:    true,
		Usage:     "Run CMD as a task's process and drain the task's container at every caravan proxy before passing a stop signal on",
		UsageText: "caravan task [--grace 20s] [--fallback 1s] CMD [ARGS...]",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "grace", Value: 20 * time.Second, Usage: "longest wait for the container's requests to finish before the signal passes on"},
			&cli.DurationFlag{Name: "fallback", Value: 2 * time.Second, Usage: "how long the process keeps serving when caravan server cannot be asked to drain"},
		},
		Action: func(c *cli.Context) error {
			argv := c.Args().Slice()
			if len(argv) == 0 {
				return cli.Exit("caravan task: give the command to run after --", 2)
			}
			logf := func(format string, args ...any) {
				fmt.Fprintf(c.App.ErrWriter, "caravan task: "+format+"\n", args...)
			}
			sup := &agent.Supervisor{Grace: c.Duration("grace"), Fallback: c.Duration("fallback"), Log: c.App.ErrWriter}
			if u := os.Getenv(agent.EnvDrainURL); u != "" {
				sup.Drain = agent.HTTPDrain(u, &http.Client{}, logf)
			} else {
				logf("%s is not set: no drain, the process serves on for %s after a stop signal", agent.EnvDrainURL, sup.Fallback)
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.App.Writer, c.App.ErrWriter
			// The process does not get the drain URL: it is the task's.
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, agent.EnvDrainURL+"=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
			defer signal.Stop(sigs)
			if code := sup.Run(cmd, sigs); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}
