package orchestrator

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// The API has always carried hcl.Range as it marshals; api.Range must
// marshal the same, and ToWire/FromWire must lose nothing but what the wire
// never carried.
func TestDiagnosticsWire(t *testing.T) {
	subject := &hcl.Range{Filename: "app.hcl", Start: hcl.Pos{Line: 6, Column: 7, Byte: 80}, End: hcl.Pos{Line: 6, Column: 15, Byte: 88}}
	context := &hcl.Range{Filename: "app.hcl", Start: hcl.Pos{Line: 5, Column: 3, Byte: 60}, End: hcl.Pos{Line: 7, Column: 4, Byte: 99}}
	diags := hcl.Diagnostics{
		{Severity: hcl.DiagError, Summary: "Invalid gpu", Detail: "Use TYPE:COUNT.", Subject: subject, Context: context},
		{Severity: hcl.DiagWarning, Summary: "Unused", Subject: subject},
		{Severity: hcl.DiagError, Summary: "No range"},
	}
	wire := ToWire(diags)

	want, _ := json.Marshal(subject)
	got, _ := json.Marshal(wire[0].Subject)
	if string(got) != string(want) {
		t.Errorf("api.Range marshals as %s, hcl.Range as %s", got, want)
	}
	if wire[0].Severity != "error" || wire[1].Severity != "warning" || wire[2].Subject != nil {
		t.Errorf("ToWire = %+v", wire)
	}
	if back := FromWire(wire); !reflect.DeepEqual(back, diags) {
		t.Errorf("FromWire(ToWire(d)) = %#v, want %#v", back, diags)
	}

	// What old servers sent decodes into the new types.
	var d Diagnostic
	old, _ := json.Marshal(struct {
		Severity string     `json:"severity"`
		Summary  string     `json:"summary"`
		Subject  *hcl.Range `json:"subject"`
	}{"error", "Invalid gpu", subject})
	if err := json.Unmarshal(old, &d); err != nil || !reflect.DeepEqual(FromWire([]Diagnostic{d})[0].Subject, subject) {
		t.Errorf("decoding %s: %+v, %v", old, d, err)
	}
}
