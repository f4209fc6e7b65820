# Edge JWT policy for `make bench` (decision path `envoy/authz/allow`, a decision object): the shape
# of most OPA-Envoy policies at the edge. No jwt_authn filter in front: the policy verifies the
# `authorization: Bearer` token itself (RS256 or ES256) against the JWKS in bundle data, with `iss`
# and `aud` constraints, then checks the tenant claim against the path and the roles claim against
# the method.
#
# data.json (written by `fixtures`, see bench/src/edge_jwt.rs): `jwks` (one RSA-2048 and one P-256
# key), `issuer`, `audience`. Request mix: bench/src/edge_jwt.rs (`load --expect edge_jwt`).
package envoy.authz

token := t if {
	[scheme, t] := split(input.attributes.request.http.headers.authorization, " ")
	lower(scheme) == "bearer"
}

claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(token, {
		"cert": json.marshal(data.jwks),
		"iss": data.issuer,
		"aud": data.audience,
	})
	valid
}

method := input.attributes.request.http.method

# /api/v1/tenants/{tenant}/...
tenant := input.parsed_path[3] if {
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "v1"
	input.parsed_path[2] == "tenants"
}

required_role := {
	"GET": "reader",
	"HEAD": "reader",
	"POST": "writer",
	"PUT": "writer",
	"PATCH": "writer",
	"DELETE": "admin",
}[method]

permitted if {
	claims.tenant == tenant
	required_role in claims.roles
}

default allow := {"allowed": false, "http_status": 401}

allow := {"allowed": true, "headers": {"x-user": claims.sub, "x-tenant": claims.tenant}} if {
	permitted
} else := {"allowed": false, "http_status": 403} if {
	claims
}
