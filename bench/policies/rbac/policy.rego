# Role-based access control for the benchmark (used when policies/rbac/ is not in the tree).
# A user (header x-user, set by an authenticating proxy) has roles; a role grants methods on path
# prefixes. Written to compile to regorus's bytecode VM.
package envoy.authz

import rego.v1

default allow := false

http_req := input.attributes.request.http

user_roles := data.rbac.users[http_req.headers["x-user"]].roles

allow if {
	some role in user_roles
	some grant in data.rbac.roles[role]
	grant.methods[_] == http_req.method
	count(input.parsed_path) >= count(grant.path)
	array.slice(input.parsed_path, 0, count(grant.path)) == grant.path
}
