# A service behind the edge (decision path `regent/passport/service/allow`): it accepts only
# passports (`x-regent-passport`, minted by the edge, see regent.passport.edge), never user tokens.
#
# - The passport must verify (`regent.passport.verify`, keys in `identity.passport.trusted`): a
#   trusted issuer's signature, this service's audience (data.regent.passport.service.audience),
#   within its lifetime, and not seen before (a replayed passport is refused). Else 401.
# - The route (data.regent.passport.service.routes) needs its scope in the passport's `scope`.
# - On-behalf-of rules (RFC 8693 `act`): a passport with `act` is a call by `act.sub` for the user
#   `sub`, allowed only when `act.sub` is one of the route's `actors`; one without `act` is the
#   user's own call, allowed only on routes with `direct: true`. Delegation chains (`act.act`) are
#   refused: no route here is meant to be reached through two intermediaries.
package regent.passport.service

import data.regent.paths

header := "x-regent-passport"

token := input.attributes.request.http.headers[header]

# The one call of the builtin: tests replace this rule (`with data.regent.passport.service.claims`).
claims := regent.passport.verify(token, {
	"aud": data.regent.passport.service.audience,
	"iss": data.regent.passport.service.issuer,
})

scopes contains s if {
	some s in split(claims.scope, " ")
	s != ""
}

matching_routes contains r if {
	some r in data.regent.passport.service.routes
	input.attributes.request.http.method in r.methods
	paths.match(r.path, input.parsed_path)
}

actor := claims.act.sub

delegated if claims.act

caller_ok(route) if {
	not delegated
	route.direct == true
}

caller_ok(route) if {
	is_string(actor)
	not claims.act.act
	actor in route.actors
}

permitted if {
	some route in matching_routes
	route.scope in scopes
	caller_ok(route)
}

default allow := {
	"allowed": false,
	"http_status": 401,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"invalid_passport\"}",
}

allow := {
	"allowed": true,
	"headers": {"x-regent-subject": claims.sub},
	"request_headers_to_remove": ["authorization"],
} if {
	permitted
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": reason}),
} if {
	is_object(claims)
}

reason := "no_route" if {
	count(matching_routes) == 0
} else := "delegation_chain" if {
	claims.act.act
} else := "actor_not_allowed" if {
	delegated
} else := "direct_call_not_allowed" if {
	some route in matching_routes
	route.scope in scopes
} else := "insufficient_scope"
