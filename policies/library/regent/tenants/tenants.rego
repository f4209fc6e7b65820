# Tenant isolation against broken object-level authorization (BOLA) (decision path
# `regent/tenants/allow`).
#
# Routes, all needing a valid token (regent.jwt) whose `tenant` claim is the caller's tenant:
# - /api/tenants/{tenant}/orders[/{id}[/...]]: the tenant in the path must be the token's, and an
#   addressed order must belong to that tenant (data.regent.tenants.orders): guessing another
#   tenant's order id under one's own tenant path does not work. Reads need orders:read, writes
#   orders:write.
# - /api/tenants/{tenant}/users[/...]: tenant administration, only for a token with role
#   `tenant_admin` whose tenant is that tenant (an admin of one tenant is nobody in another).
# - /api/users/{owner}/documents[/...]: the owner's own documents, or a `tenant_admin` of the
#   owner's tenant (data.regent.tenants.users).
# Anything else is denied.
package regent.tenants

import data.regent.jwt

default allow := false

method := input.attributes.request.http.method

p := input.parsed_path

read_methods := {"GET", "HEAD"}

write_methods := {"POST", "PUT", "PATCH", "DELETE"}

tenant := jwt.claims.tenant

is_tenant_admin if "tenant_admin" in jwt.claims.roles

# /api/tenants/{t}/orders and /api/tenants/{t}/orders/{id}/...
allow if {
	p[0] == "api"
	p[1] == "tenants"
	p[2] == tenant
	p[3] == "orders"
	order_in_tenant
	needed_scope in jwt.scopes
}

# /api/tenants/{t}/users/...
allow if {
	p[0] == "api"
	p[1] == "tenants"
	p[2] == tenant
	p[3] == "users"
	is_tenant_admin
}

# /api/users/{owner}/documents/...
allow if {
	p[0] == "api"
	p[1] == "users"
	p[3] == "documents"
	document_owner_ok
}

# A collection request addresses no order; an order request must name one of the tenant's orders.
order_in_tenant if count(p) == 4

order_in_tenant if {
	count(p) > 4
	data.regent.tenants.orders[p[4]].tenant == tenant
}

needed_scope := "orders:read" if method in read_methods

needed_scope := "orders:write" if method in write_methods

document_owner_ok if p[2] == jwt.claims.sub

document_owner_ok if {
	is_tenant_admin
	data.regent.tenants.users[p[2]].tenant == tenant
}

# Why a request was denied, for the decision log (undefined when allowed).
reason := "invalid_token" if {
	not jwt.valid
} else := "no_tenant_claim" if {
	not allow
	not tenant
} else := "cross_tenant" if {
	not allow
	p[1] == "tenants"
	p[2] != tenant
} else := "object_not_in_tenant" if {
	not allow
	p[3] == "orders"
	not order_in_tenant
} else := "forbidden" if {
	not allow
}
