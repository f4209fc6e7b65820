# RBAC reference policy (decision path `envoy/authz/allow`, boolean), the one `make bench` measures.
#
# Identity: the `sub` of the JWT that Envoy's jwt_authn filter verified and forwarded in dynamic
# metadata (`payload_in_metadata: verified_jwt`), or, from a trusted edge gateway only (mTLS
# principal in trusted_edges), the x-regent-subject header that gateway sets (regent.identity).
#
# Resources: /api/v1/tenants/{tenant}/{resource}/... (tenant resources) and /api/v1/{resource}/...
# (global ones; GET /api/v1/tenants lists tenants). A user's roles come from bindings: per tenant
# (`tenants[tenant]`) and global (`global`, which also count in every tenant). A role grants methods
# per resource; "*" stands for any resource or any method.
#
# Written for speed: every check is an exact lookup in data (no glob or regex), loops run only over
# the few roles one user holds, and nothing needs the interpreter, so it compiles to regorus's RVM.
package envoy.authz

default allow := false

method := input.attributes.request.http.method

p := input.parsed_path

verified_jwt := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].verified_jwt

subject := verified_jwt.sub

subject := input.attributes.request.http.headers["x-regent-subject"] if {
	not verified_jwt
	input.attributes.source.principal in data.envoy.authz.trusted_edges
}

binding := data.envoy.authz.bindings[subject]

allow if {
	method in {"GET", "HEAD"}
	count(p) == 1
	p[0] in data.envoy.authz.health_paths
}

# Tenant resources: a role bound in that tenant, or a global role.
allow if {
	some role in binding.tenants[tenant]
	grants(data.envoy.authz.roles[role].tenant, tenant_resource)
}

allow if {
	tenant
	some role in binding.global
	grants(data.envoy.authz.roles[role].tenant, tenant_resource)
}

# Global resources: global roles only.
allow if {
	some role in binding.global
	grants(data.envoy.authz.roles[role].global, global_resource)
}

tenant := p[3] if {
	p[0] == "api"
	p[1] == "v1"
	p[2] == "tenants"
	count(p) >= 5
	p[3] != ""
}

tenant_resource := p[4] if tenant

global_resource := p[2] if {
	p[0] == "api"
	p[1] == "v1"
	p[2] != "tenants"
	p[2] != ""
}

global_resource := "tenants" if {
	p[0] == "api"
	p[1] == "v1"
	p[2] == "tenants"
	count(p) == 3
}

grants(perms, resource) if allows_method(perms[resource])

grants(perms, _) if allows_method(perms["*"])

allows_method(methods) if method in methods

allows_method(methods) if "*" in methods
