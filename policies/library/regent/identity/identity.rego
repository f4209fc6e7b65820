# Internal identity: what the edge tells the upstream about the caller once the token is verified.
#
# Upstream services then trust a small set of headers set by the edge, never a bearer token they
# would have to verify again (and that they could replay to other services). The Authorization
# header is removed, and so is every client-sent header in the x-regent- namespace that the edge
# does not overwrite itself, so a client cannot smuggle e.g. x-regent-tenant past a token that has
# no tenant claim.
package regent.identity

import data.regent.jwt

prefix := "x-regent-"

# Headers for the upstream (OPA-Envoy decision key `headers`), from verified claims only. One object
# of optional members, each a complete rule with a default (regorus's bytecode VM cannot compile
# `headers["x-regent-subject"] := ...` yet).
headers := object.union_n([subject_header, tenant_header, scopes_header, actor_header])

default subject_header := {}

subject_header := {"x-regent-subject": jwt.claims.sub} if is_string(jwt.claims.sub)

default tenant_header := {}

tenant_header := {"x-regent-tenant": jwt.claims.tenant} if is_string(jwt.claims.tenant)

default scopes_header := {}

scopes_header := {"x-regent-scopes": concat(" ", sort(jwt.scopes))} if jwt.valid

# For a delegated call (RFC 8693 `act`), the service acting for the user.
default actor_header := {}

actor_header := {"x-regent-actor": jwt.claims.act.sub} if is_string(jwt.claims.act.sub)

# Request headers to strip (decision key `request_headers_to_remove`), sorted for a stable answer.
# Envoy sets `headers` by overwriting, so only the x-regent- headers not being set need removing.
headers_to_remove := sort([h | some h in remove_set])

remove_set contains "authorization"

remove_set contains name if {
	some name in client_identity_headers
	not headers[name]
}

# Every x-regent- header the client sent (names lower-cased: Envoy sends them lower-case anyway).
client_identity_headers contains lower(name) if {
	some name, _ in input.attributes.request.http.headers
	startswith(lower(name), prefix)
}
