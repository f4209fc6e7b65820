# Service-to-service authorization by workload identity (decision path `regent/s2s/allow`).
#
# The caller is the SPIFFE ID of its mTLS client certificate (input.attributes.source.principal, set
# by Envoy from a verified peer certificate); the callee is the SPIFFE ID of the local workload
# (input.attributes.destination.principal). data.regent.s2s.services lists, per callee, exactly
# which caller may use which methods on which paths (patterns as in regent.paths). Everything else
# is denied, including calls without a peer identity. Health endpoints are open to all (kubelet
# probes carry no workload identity).
package regent.s2s

import data.regent.paths

default allow := false

allow if health

allow if {
	some rule in data.regent.s2s.services[callee]
	rule.caller == caller
	input.attributes.request.http.method in rule.methods
	some p in rule.paths
	paths.match(p, input.parsed_path)
}

caller := input.attributes.source.principal

callee := input.attributes.destination.principal

health if {
	input.attributes.request.http.method in {"GET", "HEAD"}
	some p in data.regent.s2s.health_paths
	paths.match(p, input.parsed_path)
}

# Why a call was denied, for the decision log (undefined when allowed).
reason := "no_peer_identity" if {
	not allow
	not caller
} else := "unknown_callee" if {
	not allow
	not data.regent.s2s.services[callee]
} else := "not_in_allow_list" if {
	not allow
}
