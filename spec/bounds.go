package spec

// Bounds on a spec's source. A spec is data the server reads from anyone
// holding a token, so what it costs to load is bounded before it is parsed:
// its size (a version record in Consul KV carries it), how deeply it nests
// (HCL's parser and evaluator recurse once per level, and a Go stack
// overflow ends the process), how many tokens it has and how long its
// strings are (what parsing and every diagnostic that quotes a value cost),
// and how many diagnostics it reports.
const (
	// MaxSize is the largest spec in bytes: a Consul KV value holds at
	// most 512 KiB, and a version record holds the spec and its metadata.
	MaxSize = 256 << 10
)
