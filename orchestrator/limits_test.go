package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/spec"
)

// A spec over spec.MaxSize is refused before it is parsed, numbered,
// claimed or written: by Deploy and by Plan, with input_too_large.
func TestSpecOverTheSizeLimitChangesNothing(t *testing.T) {
	h := newHarness(t)
	// A valid spec, padded with a comment past the limit.
	src := append(shopSpec("hi"), '#')
	src = append(src, bytes.Repeat([]byte("x"), spec.MaxSize)...)
	ops := map[string]func() error{
		"deploy": func() error { _, err := h.deploy(src); return err },
		"plan": func() error {
			_, err := h.o.Plan(context.Background(), ci, DeployRequest{Spec: src, Filename: "app.hcl"})
			return err
		},
	}
	for name, op := range ops {
		err := op()
		var tooLarge *SpecTooLargeError
		if !errors.As(err, &tooLarge) || tooLarge.Limit != spec.MaxSize || tooLarge.Size != len(src) {
			t.Fatalf("%s: err = %v, want *SpecTooLargeError of %d bytes over %d", name, err, len(src), spec.MaxSize)
		}
		if api.ErrorCodeOf(err) != api.CodeInputTooLarge {
			t.Errorf("%s: code %s, want %s", name, api.ErrorCodeOf(err), api.CodeInputTooLarge)
		}
	}
	if rec, _, _ := h.store.App(context.Background(), "dev--shop"); rec != nil {
		t.Errorf("a spec over the limit was numbered: %+v", rec)
	}
	if n := len(h.nomad.calls); n != 0 {
		t.Errorf("a spec over the limit reached Nomad: %v", h.nomad.calls)
	}
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("a spec over the limit wrote %v", keys)
	}
}
