package taskcmd

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/queue"
	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

// Worker is what a warm callable function's task runs (jobs
// renders it): it serves the function's queue until Nomad stops it.
func Worker() *cli.Command {
	return &cli.Command{
		Name:      "worker",
		Hidden:    true,
		Usage:     "Serve a callable function's queue: run COMMAND once per input, or with --enter start it once and POST it each input (a warm function's task runs this)",
		ArgsUsage: "-- COMMAND [ARGS...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent-nats-url", EnvVars: []string{agent.EnvNATSURL}, Usage: "caravan server's signed `URL` of this worker's NATS credential (the job renders it)"},
			&cli.StringFlag{Name: "nats-url", Usage: "connect to this NATS `URL` instead, with --nats-token (by hand)"},
			&cli.StringFlag{Name: "nats-token", Usage: "the NATS credential with --nats-url"},
			&cli.StringFlag{Name: "workspace", Required: true},
			&cli.StringFlag{Name: "app-job", Required: true},
			&cli.StringFlag{Name: "function", Required: true},
			&cli.IntFlag{Name: "max-inputs", Value: 1},
			&cli.DurationFlag{Name: "ack-wait"},
			&cli.IntFlag{Name: "max-attempts"},
			&cli.DurationFlag{Name: "grace", Value: 8 * time.Second, Usage: "how long inputs in flight may finish once stopped"},
			&cli.BoolFlag{Name: "enter", Usage: "start COMMAND once and POST each input to it on 127.0.0.1:$PORT (the function's enter block)"},
			&cli.IntFlag{Name: "port", Usage: "with --enter: the `PORT` COMMAND listens on (0: a free one)"},
			&cli.DurationFlag{Name: "ready-timeout", Value: queue.DefaultReadyTimeout, Usage: "with --enter: how long COMMAND may take to listen"},
			&cli.StringFlag{Name: "log-level", Value: "info"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return cli.Exit("worker needs the function's command after --", 1)
			}
			log := hclog.New(&hclog.LoggerOptions{Name: "caravan-worker", Level: hclog.LevelFromString(c.String("log-level")), Output: c.App.ErrWriter})
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			nc := agent.NATSAnswer{URL: c.String("nats-url"), Token: c.String("nats-token")}
			u := c.String("agent-nats-url")
			fetched := time.Now()
			if u != "" && nc.URL == "" {
				// The user's command does not get the URL.
				_ = os.Unsetenv(agent.EnvNATSURL)
				cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				var err error
				nc, err = agent.FetchNATS(cctx, u, nil)
				cancel()
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
			} else {
				u = ""
			}
			if nc.URL == "" {
				return cli.Exit("worker needs $"+agent.EnvNATSURL+" (or --nats-url and --nats-token)", 1)
			}
			qc := queue.Config{URL: nc.URL, Token: nc.Token, InboxPrefix: nc.InboxPrefix, Name: "caravan worker " + c.String("function")}
			var renew *queue.Renewer
			if u != "" && nc.ExpiresIn > 0 {
				// The credential expires: fetch fresh ones from the same
				// URL, and reconnect with each.
				renew = queue.NewRenewer(natsCredential(nc), fetched, func(ctx context.Context) (queue.Credential, error) {
					return renewNATS(ctx, u, natsCredential(nc).ValidFor)
				})
				renew.Log = log
				qc.Token, qc.TokenFunc = "", renew.Token
			}
			q, err := queue.ConnectWorker(qc)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			defer q.Close()
			if renew != nil {
				renew.Renewed = func() {
					if err := q.Reconnect(); err != nil {
						log.Warn("reconnecting with the renewed NATS credential", "error", err)
					}
				}
				// Renewals go on while inputs in flight finish (the grace).
				rctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go renew.Run(rctx)
			}
			f := queue.Func{Workspace: c.String("workspace"), AppJobID: c.String("app-job"), Name: c.String("function")}
			// Inputs' files go in the task's own directory (NOMAD_TASK_DIR;
			// exec's chroot may have no /tmp).
			cmd := &queue.Command{Path: c.Args().First(), Args: c.Args().Tail(), Dir: os.Getenv("NOMAD_TASK_DIR")}
			w := &queue.Worker{Q: q, Func: f, MaxInputs: c.Int("max-inputs"), Run: cmd.Run, Log: log, InputKey: nc.InputKey,
				Config: queue.FuncConfig{AckWait: c.Duration("ack-wait"), MaxAttempts: c.Int("max-attempts")}}
			supervised := make(chan struct{})
			close(supervised)
			stopProcess := func() {}
			if c.Bool("enter") {
				// One process for every input of this worker; it stops
				// after the inputs in flight (Serve's grace).
				p := &queue.Process{Path: cmd.Path, Args: cmd.Args, Port: c.Int("port"), ReadyTimeout: c.Duration("ready-timeout"),
					MaxInputs: w.MaxInputs, Log: log.Named("process")}
				pctx, cancel := context.WithCancel(context.Background())
				supervised = make(chan struct{})
				go func() { defer close(supervised); p.Supervise(pctx) }()
				stopProcess = cancel
				w.Run = p.Run
			}
			log.Info("serving", "function", f.String(), "max_inputs", w.MaxInputs, "command", cmd.Path, "enter", c.Bool("enter"))
			err = w.Serve(ctx, c.Duration("grace"))
			stopProcess()
			<-supervised
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			log.Info("stopped")
			return nil
		},
	}
}

// natsCredential is the credential in a and how long it is valid.
func natsCredential(a agent.NATSAnswer) queue.Credential {
	return queue.Credential{Token: a.Token, ValidFor: time.Duration(a.ExpiresIn * float64(time.Second))}
}

// renewNATS fetches a fresh credential from the agent URL u, trying for
// up to a quarter of the lifetime validFor (1 s to 30 s) before the
// Renewer tries again.
func renewNATS(ctx context.Context, u string, validFor time.Duration) (queue.Credential, error) {
	ctx, cancel := context.WithTimeout(ctx, min(max(validFor/4, time.Second), 30*time.Second))
	defer cancel()
	a, err := agent.FetchNATS(ctx, u, nil)
	if err != nil {
		return queue.Credential{}, err
	}
	return natsCredential(a), nil
}
