// Command caravan-fake-gpu is a Nomad device plugin for caravan's tests and
// local stack: it reports a configured number of "nvidia/gpu" devices of a
// configured model (with a memory attribute), and reserves them for a task
// by setting NVIDIA_VISIBLE_DEVICES, as the real NVIDIA plugin does. It lets
// Nomad's scheduler place, and refuse, GPU functions on a machine with no GPU.
package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	log "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/device"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"
	"github.com/hashicorp/nomad/plugins/shared/structs"
)

const pluginName = "caravan-fake-gpu"

var configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"model":      hclspec.NewDefault(hclspec.NewAttr("model", "string", false), hclspec.NewLiteral(`"H100"`)),
	"count":      hclspec.NewDefault(hclspec.NewAttr("count", "number", false), hclspec.NewLiteral(`2`)),
	"memory_mib": hclspec.NewDefault(hclspec.NewAttr("memory_mib", "number", false), hclspec.NewLiteral(`81920`)),
})

type config struct {
	Model     string `codec:"model"`
	Count     int    `codec:"count"`
	MemoryMiB int64  `codec:"memory_mib"`
}

type fakeGPU struct {
	log log.Logger
	cfg config
}

func main() {
	plugins.Serve(func(l log.Logger) interface{} { return &fakeGPU{log: l} })
}

func (d *fakeGPU) PluginInfo() (*base.PluginInfoResponse, error) {
	return &base.PluginInfoResponse{
		Type:              base.PluginTypeDevice,
		PluginApiVersions: []string{device.ApiVersion010},
		PluginVersion:     "v0.1.0",
		Name:              pluginName,
	}, nil
}

func (d *fakeGPU) ConfigSchema() (*hclspec.Spec, error) { return configSpec, nil }

func (d *fakeGPU) SetConfig(c *base.Config) error {
	if len(c.PluginConfig) == 0 {
		d.cfg = config{Model: "H100", Count: 2, MemoryMiB: 81920}
		return nil
	}
	return base.MsgPackDecode(c.PluginConfig, &d.cfg)
}

func (d *fakeGPU) ids() []string {
	ids := make([]string, d.cfg.Count)
	for i := range ids {
		ids[i] = fmt.Sprintf("GPU-fake-%s-%d", strings.ToLower(d.cfg.Model), i)
	}
	return ids
}

func (d *fakeGPU) Fingerprint(ctx context.Context) (<-chan *device.FingerprintResponse, error) {
	out := make(chan *device.FingerprintResponse, 1)
	var devs []*device.Device
	for _, id := range d.ids() {
		devs = append(devs, &device.Device{ID: id, Healthy: true})
	}
	mem := d.cfg.MemoryMiB
	out <- device.NewFingerprint(&device.DeviceGroup{
		Vendor:  "nvidia",
		Type:    device.DeviceTypeGPU,
		Name:    d.cfg.Model,
		Devices: devs,
		Attributes: map[string]*structs.Attribute{
			"memory": {Int: &mem, Unit: structs.UnitMiB},
		},
	})
	go func() { <-ctx.Done(); close(out) }()
	return out, nil
}

func (d *fakeGPU) Reserve(ids []string) (*device.ContainerReservation, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("no device ids given")
	}
	return &device.ContainerReservation{Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(ids, ",")}}, nil
}

func (d *fakeGPU) Stats(ctx context.Context, _ time.Duration) (<-chan *device.StatsResponse, error) {
	out := make(chan *device.StatsResponse)
	go func() { <-ctx.Done(); close(out) }()
	return out, nil
}
