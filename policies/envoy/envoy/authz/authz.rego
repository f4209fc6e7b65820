# Regent's demo policy (decision path `envoy/authz/allow`, the sidecar's default), used by `make run`
# and the end-to-end tests. Self-contained: its own JWKS (envoy/authz/jwks/data.json) and matching_routes.
# Tokens for trying it out are in policies/envoy/demo-tokens.json.
#
# - GET /health and /public/** are open.
# - Everything else needs a bearer token signed by the demo issuer (RS256 only; iss, aud, exp and
#   nbf checked with 30 s of clock skew); without a valid one: 401 with a JSON body.
# - The route decides the scope: GET /api/orders[/{id}] orders:read, POST /api/orders
#   orders:write, DELETE /api/orders/{id} orders:admin. A missing scope or an unknown route: 403
#   with a JSON body saying why.
# - On allow the upstream gets x-regent-subject / x-regent-tenant / x-regent-scopes and no
#   Authorization header; client-sent x-regent-* headers never reach it.
package envoy.authz

method := input.attributes.request.http.method

now_ns := (input.attributes.request.time.seconds * 1000000000) + object.get(input.attributes.request.time, "nanos", 0) if {
	is_number(input.attributes.request.time.seconds)
} else := time.now_ns()

token := t if {
	parts := split(trim_space(input.attributes.request.http.headers.authorization), " ")
	count(parts) == 2
	lower(parts[0]) == "bearer"
	t := parts[1]
	t != ""
}

# Verified claims (undefined unless the token passes every check).
claims := payload if {
	[header, unchecked, _] := io.jwt.decode(token)
	header.alg in data.envoy.authz.algorithms
	is_number(unchecked.exp)
	[true, _, payload] := io.jwt.decode_verify(token, {
		"cert": json.marshal(data.envoy.authz.jwks),
		"alg": header.alg,
		"iss": data.envoy.authz.issuer,
		"aud": data.envoy.authz.audience,
		"time": check_time_ns(unchecked),
	})
}

# decode_verify has no clock skew: a `now` within the skew of the token's [nbf, exp) window is moved
# just inside it.
check_time_ns(p) := t if {
	is_number(p.nbf)
	now_s := now_ns / 1000000000
	now_s < p.nbf
	p.nbf - now_s <= data.envoy.authz.clock_skew_seconds
	t := p.nbf * 1000000000
} else := t if {
	now_s := now_ns / 1000000000
	now_s >= p.exp
	now_s - p.exp < data.envoy.authz.clock_skew_seconds
	t := (p.exp * 1000000000) - 1000000
} else := now_ns

scopes := {s | some s in split(claims.scope, " "); s != ""}

public if {
	some r in data.envoy.authz.public_routes
	method in r.methods
	path_matches(r.path, input.parsed_path)
}

# Path patterns are pre-split in data: "*" is one non-empty segment, a final "**" any rest.
path_matches(pattern, segs) if {
	count(pattern) == count(segs)
	every i, p in pattern {
		segment_matches(p, segs[i])
	}
}

path_matches(pattern, segs) if {
	pattern[count(pattern) - 1] == "**"
	prefix := array.slice(pattern, 0, count(pattern) - 1)
	count(segs) >= count(prefix)
	every i, p in prefix {
		segment_matches(p, segs[i])
	}
	every s in array.slice(segs, count(prefix), count(segs)) {
		not s in {".", ".."}
	}
}

segment_matches(p, s) if {
	p == "*"
	not s in {"", ".", ".."}
}

segment_matches(p, s) if {
	p != "*"
	p == s
}

matching_routes contains r if {
	some r in data.envoy.authz.routes
	method in r.methods
	path_matches(r.path, input.parsed_path)
}

permitted if {
	some r in matching_routes
	r.scope in scopes
}

client_identity_headers contains lower(name) if {
	some name, _ in input.attributes.request.http.headers
	startswith(lower(name), "x-regent-")
}

# One object of optional members (written as complete rules with defaults rather than
# `identity_headers["x-regent-subject"] := ...`, which regorus's bytecode VM cannot compile yet).
identity_headers := object.union_n([subject_header, tenant_header, scopes_header])

default subject_header := {}

subject_header := {"x-regent-subject": claims.sub} if is_string(claims.sub)

default tenant_header := {}

tenant_header := {"x-regent-tenant": claims.tenant} if is_string(claims.tenant)

default scopes_header := {}

scopes_header := {"x-regent-scopes": concat(" ", sort(scopes))} if claims

# Authorization, and client-sent x-regent-* headers the decision does not overwrite.
headers_to_remove contains "authorization"

headers_to_remove contains h if {
	some h in client_identity_headers
	not identity_headers[h]
}

deny(status, error, reason) := {
	"allowed": false,
	"http_status": status,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": error, "reason": reason, "status": status}),
}

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reason\":\"denied by default\",\"status\":403}",
}

allow := {
	"allowed": true,
	"request_headers_to_remove": sort(client_identity_headers),
	"response_headers_to_add": {"x-regent-decision": "allowed"},
} if {
	public
} else := object.union(deny(401, "unauthenticated", "a valid bearer token is required"), {"headers": {"www-authenticate": "Bearer realm=\"regent-demo\""}}) if {
	not claims
} else := {
	"allowed": true,
	"headers": identity_headers,
	"request_headers_to_remove": sort(headers_to_remove),
	"response_headers_to_add": {"x-regent-decision": "allowed"},
} if {
	permitted
} else := deny(403, "forbidden", sprintf("missing scope %s", [concat(" or ", sort({r.scope | some r in matching_routes}))])) if {
	count(matching_routes) > 0
} else := deny(403, "forbidden", sprintf("no route for %s %s", [method, input.attributes.request.http.path]))
