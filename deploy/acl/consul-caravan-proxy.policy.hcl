# Consul ACL policy of caravan proxy (the data plane before autoscaled
# functions): exactly what its code calls.
#
#   consul acl policy create -name caravan-proxy -rules @consul-caravan-proxy.policy.hcl
#   consul acl token create -description "caravan proxy" -policy-name caravan-proxy
#
# Every call:
#
#   Health().Service(<function>), blocking: the containers of
#     each function it proxies to                         service_prefix "" read,
#                                                         node_prefix "" read
#   KV().Get caravan/proxy/functions/<service>: a
#     function's settings while it has no container       key_prefix "caravan/proxy/functions/" read
#   Agent().ServiceRegisterOpts, ServiceDeregister of
#     caravan-proxy with its HTTP check (--register
#     only; on Nomad the job's service block does it)     service "caravan-proxy" write
service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

key_prefix "caravan/proxy/functions/" {
  policy = "read"
}

service "caravan-proxy" {
  policy = "write"
}
