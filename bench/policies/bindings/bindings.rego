# Bindings policy for `make bench` (decision path `envoy/authz/allow`, boolean): 5,000 role bindings
# `{"user", "role", "resource"}` in data, scanned for one of the subject's whose resource is a prefix
# of the path and whose role grants the method. The naive shape a first policy has: one loop over the
# whole list per request, no index by user (compare policies/rbac, which looks the user up).
#
# data.json (written by `fixtures`, see bench/src/bindings.rs): `bindings`, and `roles`: role ->
# methods. Request mix: bench/src/bindings.rs (`load --expect bindings`).
package envoy.authz

default allow := false

subject := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].verified_jwt.sub

allow if {
	some b in data.bindings
	b.user == subject
	startswith(input.attributes.request.http.path, b.resource)
	input.attributes.request.http.method in data.roles[b.role]
}
