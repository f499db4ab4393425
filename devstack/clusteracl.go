package devstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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

// defaultNamespaceRules is rules with its namespace "caravan-*" blocks
// also granted in Nomad's default namespace, where caravan registers
// every app until workspaces are Nomad namespaces.
func defaultNamespaceRules(rules string) string {
	i := strings.Index(rules, `namespace "caravan-*" {`)
	if i < 0 {
		return rules
	}
	end := strings.Index(rules[i:], "\n}")
	if end < 0 {
		return rules
	}
	block := rules[i : i+end+2]
	return rules + "\n# devstack: the same in the default namespace, where caravan registers apps today.\n" +
		strings.Replace(block, `namespace "caravan-*"`, `namespace "default"`, 1) + "\n"
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
			pol := &nomad.ACLPolicy{Name: p.name, Description: "devstack, from " + p.file, Rules: defaultNamespaceRules(string(b))}
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
