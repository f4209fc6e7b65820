# Edge JWT validation with scopes per route (decision path `regent/edge/allow`).
#
# - Public routes (data.regent.edge.public) pass without a token; client-sent x-regent-* headers
#   are still stripped.
# - Every other request needs a valid bearer token (see regent.jwt): a missing or invalid one is a
#   401 with a WWW-Authenticate challenge (RFC 6750).
# - The route (method + path pattern, data.regent.edge.routes) decides the scopes needed: the
#   request passes when the token holds every scope of at least one matching route. A route that
#   matches but whose scopes are missing is a 403 `insufficient_scope`; a request no route matches
#   is a 403 `no_route` (default deny).
# - On allow, the upstream gets the verified identity headers and no Authorization header
#   (see regent.identity).
package regent.edge

import data.regent.identity
import data.regent.jwt
import data.regent.paths

method := input.attributes.request.http.method

public if {
	some r in data.regent.edge.public_routes
	method in r.methods
	paths.match(r.path, input.parsed_path)
}

matching_routes contains r if {
	some r in data.regent.edge.routes
	method in r.methods
	paths.match(r.path, input.parsed_path)
}

permitted if {
	some r in matching_routes
	every s in r.scopes {
		s in jwt.scopes
	}
}

# Scopes that would satisfy some matching route, for the insufficient_scope challenge.
wanted_scopes := concat(" ", sort({s | some r in matching_routes; some s in r.scopes}))

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\"}",
}

allow := {
	"allowed": true,
	"request_headers_to_remove": sort(identity.client_identity_headers),
} if {
	public
} else := {
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
	"allowed": true,
	"headers": identity.headers,
	"request_headers_to_remove": identity.headers_to_remove,
} if {
	permitted
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {
		"content-type": "application/json",
		"www-authenticate": sprintf("Bearer realm=\"regent\", error=\"insufficient_scope\", scope=\"%s\"", [wanted_scopes]),
	},
	"body": json.marshal({"error": "insufficient_scope", "scope": wanted_scopes}),
} if {
	count(matching_routes) > 0
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "no_route"}),
}

# RFC 6750: a request without credentials gets a bare challenge, a bad token `invalid_token`.
challenge := "Bearer realm=\"regent\"" if {
	jwt.failure == "missing_token"
} else := "Bearer realm=\"regent\", error=\"invalid_token\""
