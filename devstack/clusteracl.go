package devstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// Least-privilege tokens of a cluster stack: made from the policy files
// of deploy/acl (Options.ACLDir) once the cluster's ACLs are bootstrapped,
// one token file (mode 0600) per part under <state>/tokens. Without the
// files every part gets the management tokens.

// aclParts are the policies the stack applies: name (of the policy and
// the token file) and policy file, per system.
var aclParts = []struct{ system, name, file string }{
	{"nomad", "caravan-server", "nomad-caravan-server.policy.hcl"},
	{"consul", "caravan-server", "consul-caravan-server.policy.hcl"},
	{"consul", "caravan-proxy", "consul-caravan-proxy.policy.hcl"},
	{"consul", "traefik", "consul-traefik.policy.hcl"},
}

// TokenFile is the file of part's token for system ("nomad" or "consul"),
// e.g. TokenFile("nomad", "caravan-server").
func (c *Cluster) TokenFile(system, part string) string {
	if c.Tokens[system+"/"+part] {
		return filepath.Join(filepath.Dir(c.NomadTokenFile), "tokens", system+"-"+part+".token")
	}
	if system == "nomad" {
		return c.NomadTokenFile
	}
	return c.ConsulTokenFile
}

// makeTokens applies the policies of dir and makes a token of each,
// recording which parts have one in c.Tokens.
func (s *Stack) makeTokens(ctx context.Context, dir string) error {
	c := s.Cluster
	if err := os.MkdirAll(filepath.Join(s.StateDir, "tokens"), 0o700); err != nil {
		return err
	}
	nc, err := s.NomadClient(s.NomadAddr())
	if err != nil {
		return err
	}
	cc, err := s.ConsulClient(s.ConsulAddr())
	if err != nil {
		return err
	}
	c.Tokens = map[string]bool{}
	for _, p := range aclParts {
		b, err := os.ReadFile(filepath.Join(dir, p.file))
		if err != nil {
			return fmt.Errorf("the cluster's ACL policies: %w", err)
		}
		var secret string
		switch p.system {
		case "nomad":
			pol := &nomad.ACLPolicy{Name: p.name, Description: "devstack, from " + p.file, Rules: string(b)}
			if _, err := nc.ACLPolicies().Upsert(pol, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("applying %s in Nomad: %w", p.file, err)
			}
			tok, _, err := nc.ACLTokens().Create(&nomad.ACLToken{Name: p.name, Type: "client", Policies: []string{p.name}},
				(&nomad.WriteOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("making Nomad's %s token: %w", p.name, err)
			}
			secret = tok.SecretID
		case "consul":
			if _, _, err := cc.ACL().PolicyCreate(&consul.ACLPolicy{Name: p.name, Description: "devstack, from " + p.file, Rules: string(b)},
				(&consul.WriteOptions{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("applying %s in Consul: %w", p.file, err)
			}
			tok, _, err := cc.ACL().TokenCreate(&consul.ACLToken{Description: p.name, Policies: []*consul.ACLTokenPolicyLink{{Name: p.name}}},
				(&consul.WriteOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("making Consul's %s token: %w", p.name, err)
			}
			secret = tok.SecretID
		}
		c.Tokens[p.system+"/"+p.name] = true
		if err := os.WriteFile(c.TokenFile(p.system, p.name), []byte(secret+"\n"), 0o600); err != nil {
			return err
		}
	}
	return s.save()
}

// CreateNamespaces creates Nomad namespaces (caravan-<workspace>) with the
// management token: caravan server's own token, of deploy/acl's policy,
// may not (creating a namespace takes a management token in Nomad).
func (s *Stack) CreateNamespaces(ctx context.Context, names ...string) error {
	nc, err := s.NomadClient(s.NomadAddr())
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := nc.Namespaces().Register(&nomad.Namespace{Name: n, Description: "devstack"}, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("creating Nomad namespace %s: %w", n, err)
		}
	}
	return nil
}
