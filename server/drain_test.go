package server

import (
	"reflect"
	"testing"

	"github.com/caravanhq/caravan/proxy"
)

func TestAllocInstances(t *testing.T) {
	const a = "b4e61df9-b095-d64e-f241-23860da1375f"
	r := proxy.Report{Functions: []proxy.FunctionLoad{
		{Function: "web-acme-shop", Instances: []proxy.InstanceLoad{
			{ID: "_nomad-task-" + a + "-group-web-web-acme-shop-http"},
			{ID: "_nomad-task-c0ffee00-b095-d64e-f241-23860da1375f-group-web-web-acme-shop-http"},
		}},
		{Function: "api-acme-shop", Instances: []proxy.InstanceLoad{{ID: "_nomad-task-" + a + "1-group-api-x-http"}}},
	}}
	for _, tc := range []struct {
		alloc string
		want  [][2]string
	}{
		{a, [][2]string{{"web-acme-shop", "_nomad-task-" + a + "-group-web-web-acme-shop-http"}}},
		{"", nil},
		{"b4e61df9", nil},
	} {
		if got := allocInstances(r, tc.alloc); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("allocInstances(%q) = %v, want %v", tc.alloc, got, tc.want)
		}
	}
}
