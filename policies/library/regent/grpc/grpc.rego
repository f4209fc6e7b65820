# gRPC: authorization per method plus checks on the decoded request message (decision path
# `regent/grpc/allow`). Needs the sidecar's `policy.proto_descriptor` set to proto/orders.pb so that
# input.parsed_body holds the first request message in protojson form (camelCase field names,
# 64-bit integers as strings).
#
# data.regent.grpc.services[service][method] lists what each method needs:
# - `scope`: a valid token (regent.jwt) holding that scope;
# - `tenant_field`: the message field naming the tenant must be the token's tenant, so a caller
#   cannot read another tenant's order by putting its id in the body;
# - `callers`: SPIFFE IDs allowed by mTLS identity alone (service accounts, no user token).
# CreateRefund also goes through regent.refunds' `refundable` (scope, order age, amount).
# Unknown services and methods, non-POST calls and truncated bodies are denied.
package regent.grpc

import data.regent.jwt
import data.regent.refunds

default allow := false

allow if {
	call_ok
	config := data.regent.grpc.services[service][rpc]
	method_ok(rpc, config)
}

# parsed_path of a gRPC call is exactly [<package.Service>, <Method>].
service := input.parsed_path[0] if count(input.parsed_path) == 2

rpc := input.parsed_path[1] if count(input.parsed_path) == 2

body := input.parsed_body

call_ok if {
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.headers["content-type"], "application/grpc")
	not input.truncated_body
}

method_ok(_, config) if {
	input.attributes.source.principal in config.callers
}

method_ok(name, config) if {
	name != "CreateRefund"
	config.scope in jwt.scopes
	tenant_ok(config)
}

method_ok("CreateRefund", config) if {
	tenant_ok(config)
	regex.match(`^[0-9]+$`, body.amountCents)
	refunds.refundable(body.orderId, jwt.claims.tenant, to_number(body.amountCents))
}

tenant_ok(config) if {
	is_string(config.tenant_field)
	body[config.tenant_field] == jwt.claims.tenant
}
