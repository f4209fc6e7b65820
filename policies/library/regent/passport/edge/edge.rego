# Edge token exchange (decision path `regent/passport/edge/allow`).
#
# The user's bearer token is verified once, here (see regent.jwt), and exchanged for a passport: a
# short-lived JWT minted by this sidecar (`regent.passport.mint`, keys in `identity.passport`) for
# the one upstream the route leads to. The upstream gets the passport in `x-regent-passport` and
# never sees the user's token: `authorization` is removed, and so is every other client-sent
# x-regent- header (a client cannot smuggle its own passport either: the edge overwrites it).
#
# - The route (method + path pattern, data.regent.passport.edge.routes) names the upstream's
#   audience and the scopes the user needs. No route: 403 `no_route`; the scopes missing: 403
#   `insufficient_scope`; no valid token: 401.
# - The passport carries `sub`, the claims listed in forward_claims (when the token has them),
#   and the token's `act` (RFC 8693), so a delegated call stays delegated downstream.
# - No signing key configured (mint undefined): 503 `passport_unavailable`, never a request
#   forwarded without its passport.
package regent.passport.edge

import data.regent.identity
import data.regent.jwt
import data.regent.paths

header := "x-regent-passport"

method := input.attributes.request.http.method

matching_routes contains r if {
	some r in data.regent.passport.edge.routes
	method in r.methods
	paths.match(r.path, input.parsed_path)
}

# The upstream's audience: defined only when the matching routes agree on one.
audience := a if {
	audiences := {r.audience | some r in matching_routes}
	count(audiences) == 1
	some a in audiences
}

permitted if {
	some r in matching_routes
	every s in r.scopes {
		s in jwt.scopes
	}
}

forwarded_claims := {name: jwt.claims[name] |
	some name in data.regent.passport.edge.forward_claims
	jwt.claims[name]
}

default delegation := {}

delegation := {"act": jwt.claims.act} if is_object(jwt.claims.act)

spec := object.union(
	{
		"aud": audience,
		"sub": jwt.claims.sub,
		"claims": forwarded_claims,
		"ttl_seconds": data.regent.passport.edge.ttl_seconds,
	},
	delegation,
)

# The one call of the builtin: tests replace this rule (`with data.regent.passport.edge.passport`).
passport := regent.passport.mint(spec)

# Client-sent x-regent- headers are dropped, except the one the decision overwrites.
headers_to_remove := sort(array.concat(["authorization"], [h |
	some h in identity.client_identity_headers
	h != header
]))

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\"}",
}

allow := {
	"allowed": false,
	"http_status": 401,
	"headers": {
		"content-type": "application/json",
		"www-authenticate": challenge,
	},
	"body": json.marshal({"error": jwt.failure}),
} if {
	jwt.failure
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "no_route"}),
} if {
	not audience
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "insufficient_scope"}),
} if {
	not permitted
} else := {
	"allowed": true,
	"headers": {header: passport},
	"request_headers_to_remove": headers_to_remove,
} if {
	is_string(passport)
} else := {
	"allowed": false,
	"http_status": 503,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "passport_unavailable"}),
}

challenge := "Bearer realm=\"regent\"" if {
	jwt.failure == "missing_token"
} else := "Bearer realm=\"regent\", error=\"invalid_token\""
