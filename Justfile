# caravan: `just up` starts a local stack with an example app; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

export GOFLAGS := "-buildvcs=false"

# List the recipes.
default:
    @just --list

# Build the caravan CLI into bin/caravan, and beside it bin/caravan-agent, the small binary caravan server serves to tasks.
build:
    go build -o bin/caravan ./cmd/caravan
    go build -o bin/caravan-agent ./cmd/caravan-agent

# Build pinned Nomad, Consul and Traefik once into ~/.cache/caravan/bin and install pebble.
servers: build
    bin/caravan dev install

# Build the pinned SeaweedFS once into ~/.cache/caravan/bin (about 10 minutes on 2 cores; nothing when it is there): a real
# S3 server, which the S3 bundle store's tests (bundlestore TestS3Server, e2e TestBundlesInS3) use (they skip without it).
seaweedfs:
    test -x ~/.cache/caravan/bin/weed-7506e5f91cd6 || (cd tools/weed && nice -n 19 go build -trimpath -o ~/.cache/caravan/bin/weed-7506e5f91cd6.tmp github.com/seaweedfs/seaweedfs/weed && mv ~/.cache/caravan/bin/weed-7506e5f91cd6.tmp ~/.cache/caravan/bin/weed-7506e5f91cd6)

# Build the nats-server go.mod pins once into ~/.cache/caravan/bin/nats-server-<version> (seconds; nothing when it is there):
# e2e/cluster's TestClusterNATSJob runs deploy/nomad/nats.nomad.hcl's 3-node cluster with it (and builds it itself when missing).
nats-server:
    v=$(go list -m -f '{{{{.Version}}' github.com/nats-io/nats-server/v2); test -x ~/.cache/caravan/bin/nats-server-$v || (mkdir -p ~/.cache/caravan/bin && go build -o ~/.cache/caravan/bin/nats-server-$v.tmp github.com/nats-io/nats-server/v2 && mv ~/.cache/caravan/bin/nats-server-$v.tmp ~/.cache/caravan/bin/nats-server-$v)

# Start Nomad, Consul, Traefik, Pebble and caravan server on 127.0.0.1 and deploy examples/hello.hcl.
up: servers
    bin/caravan dev up

# The same with a cluster behind it: 3 Consul servers, 3 Nomad servers, 2 Nomad clients, ACLs and TLS, two caravan servers.
up-cluster: servers
    bin/caravan dev up --cluster

# The e2e tests that run on the cluster stack (package e2e/cluster, its own stack; about 2.5 minutes).
test-cluster: servers nats-server
    go test -count=1 -timeout 15m -v ./e2e/cluster/

# The cluster's figures on the cluster stack (package e2e/cluster, tag bench; not part of `just test`):
# deploy time of a new 3-function app, the faults under load, P6 (100 apps deployed at once).
cluster-bench: servers
    go test -tags bench -count=1 -run 'TestBench' -v -timeout 40m ./e2e/cluster/ 2>&1 | grep -vE '^(=== |--- PASS|PASS$)'

# Stop exactly what `just up` started.
down: build
    bin/caravan dev down

# What the local stack runs, and where.
status: build
    bin/caravan dev status

# Unit and golden tests only (no servers needed).
unit:
    go vet ./...
    go test -count=1 $(go list ./... | grep -v /e2e)

# Every test: unit, golden and end-to-end against a real stack on free ports.
test: servers seaweedfs nats-server
    go vet ./...
    go test -count=1 -timeout 60m ./...

# Fuzz spec loading -> render -> Traefik's tag decoder and router (its seeds run in every test); new failures land in jobs/testdata/fuzz.
fuzz time="60s":
    go test -run '^$' -fuzz '^FuzzSpec$' -fuzztime {{time}} -fuzzminimizetime 5s ./jobs/

# Rewrite the golden files after an intended rendering change; review the diff.
golden:
    go test ./jobs/ -update

# Speed figures from real runs on a real local stack (prints them and how they were measured).
bench: servers
    go test -tags bench -count=1 -run 'TestBench' -v ./queue/ 2>&1 | grep -vE '^(=== |--- PASS|PASS$|ok )'
    go test -tags bench -count=1 -run 'TestBench|TestZeroFailedRequestsAcrossRollingRedeploys' -v -timeout 30m ./e2e/ 2>&1 | grep -vE '^(=== |--- PASS|PASS$)'
