package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/nomad/api"
)

// JSON renders job in the API form `nomad job run -json` and the
// /v1/jobs endpoint accept ({"Job": {...}}), indented, with keys sorted and
// unset (null) fields left out so the output reads like a spec.
func JSON(job *api.Job) ([]byte, error) {
	return CleanJSON(map[string]any{"Job": job})
}

// CleanJSON marshals v with null fields removed and keys sorted.
func CleanJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("re-reading JSON: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(dropNulls(tree)); err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	return buf.Bytes(), nil
}

func dropNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if e == nil {
				delete(t, k)
				continue
			}
			t[k] = dropNulls(e)
		}
	case []any:
		for i, e := range t {
			t[i] = dropNulls(e)
		}
	}
	return v
}
