# Consul ACL policy of Traefik as caravan configures it: the consulCatalog
# provider (routes from the services' tags) and the consul KV provider
# (canary splits, the proxies' service, the wildcard certificate's
# router), both read-only. Give the token to both providers
# (providers.consulCatalog.endpoint.token, providers.consul.token).
#
#   consul acl policy create -name traefik -rules @consul-traefik.policy.hcl
#   consul acl token create -description traefik -policy-name traefik
#
# Every call (Traefik 3.6):
#
#   consulCatalog: Catalog().Services, Health().Service   service_prefix "" read,
#     of each, blocking (watch = true)                    node_prefix "" read
#   consul KV: Exists (a check at start), List and a
#     blocking WatchTree of rootKey                       key_prefix "traefik/" read
#
# Traefik keeps its ACME certificates in its storage file, not in Consul.
service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

key_prefix "traefik/" {
  policy = "read"
}
