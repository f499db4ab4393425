# Consul ACL policy of caravan server (its autoscaler included): exactly
# what its code calls.
#
#   consul acl policy create -name caravan-server -rules @consul-caravan-server.policy.hcl
#   consul acl token create -description "caravan server" -policy-name caravan-server
#
# Every call:
#
#   KV().Get, List, Keys, Put, CAS, Txn() under caravan/   key_prefix "caravan/" write
#     apps/<job>/record, apps/<job>/versions/..., hostnames/, hostnames-under/,
#     domains/, domain-secret, bundle-key, bundle-grants/, tokens/ (hashed),
#     probe-secret, router-config, autoscaler/leader, canaries/leader
#   KV().List caravan/proxy/functions/ (autoscaler)       (the same prefix)
#   Txn(), KV().DeleteTree under traefik/ (Traefik's KV   key_prefix "traefik/" write
#     provider: canary splits, the proxies' service,      (the root is --traefik-kv-root;
#     the wildcard certificate's router, a new app's      change it with it)
#     first routes: txn lock ops under their session)
#   LockOpts: a session per app change (caravan/apps/<job>/lock), for the
#     active autoscaler (caravan/autoscaler/leader) and   session_prefix "" write
#     canary watcher (caravan/canaries/leader), and
#     one per new app's deploy holding its first routes:
#     Session().Create on the local agent's node, Renew, Destroy; KV acquire
#     and release, blocking KV Get
#   Health().Service: instances of each function's service and of
#     caravan-proxy                                       service_prefix "" read,
#                                                         node_prefix "" read
#     (Consul drops from health results the nodes a token cannot read.)
#
# Sessions are on the agent caravan server talks to; to narrow
# session_prefix "" write, name those agents' nodes: session "node-1" { policy = "write" }.
key_prefix "caravan/" {
  policy = "write"
}

key_prefix "traefik/" {
  policy = "write"
}

session_prefix "" {
  policy = "write"
}

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
