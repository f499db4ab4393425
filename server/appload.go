package server

import (
	"context"
	"sync"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
)

// LoadReader reads the caravan proxies' load reports for `caravan app
// list` (autoscaler.Clients is one).
type LoadReader interface {
	// Proxies lists the admin base URLs of the proxies that pass their
	// checks.
	Proxies(ctx context.Context) ([]string, error)
	Load(ctx context.Context, admin string) (proxy.Report, error)
}

// appLoadTimeout bounds the read of the proxies' reports for a listing:
// a proxy that does not answer in time is left out (Load.Proxies says
// how many did).
const appLoadTimeout = time.Second

// readReports reads every proxy's report at once; known is how many
// proxies are registered and passing, reports those that answered.
func readReports(ctx context.Context, lr LoadReader) (reports []proxy.Report, known int, err error) {
	admins, err := lr.Proxies(ctx)
	if err != nil {
		return nil, 0, err
	}
	got := make([]*proxy.Report, len(admins))
	var wg sync.WaitGroup
	for i, a := range admins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, appLoadTimeout)
			defer cancel()
			if r, err := lr.Load(lctx, a); err == nil {
				got[i] = &r
			}
		}()
	}
	wg.Wait()
	for _, r := range got {
		if r != nil {
			reports = append(reports, *r)
		}
	}
	return reports, len(admins), nil
}

// withLoad sets the Load of every autoscaled function of apps from the
// proxies' reports (of known proxies): summed per service. With no report
// the load is unknown and stays nil.
func withLoad(apps []api.AppSummary, reports []proxy.Report, known int) {
	if len(reports) == 0 {
		return
	}
	sum := map[string]api.FunctionLoad{}
	for _, r := range reports {
		for _, f := range r.Functions {
			l := sum[f.Function]
			l.InFlight += f.InFlight
			l.Queued += f.Queued
			sum[f.Function] = l
		}
	}
	for i := range apps {
		for j := range apps[i].Functions {
			f := &apps[i].Functions[j]
			if !f.Autoscaled || f.Service == "" {
				continue
			}
			l := sum[f.Service] // a proxy that knows nothing of it holds none
			l.Proxies, l.ProxiesKnown = len(reports), known
			f.Load = &l
		}
	}
}
