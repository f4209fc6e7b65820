# Edge JWT policy with keys from a remote key set, for `make bench`: bench/policies/edge_jwt in
# every respect (decision path `envoy/authz/allow`, the same rules and answers), except that the
# token is verified against the sidecar's key set of `data.issuer` (`identity.jwks`, docs/identity.md)
# through the `jwks_issuer` constraint, instead of a JWKS in bundle data. Without an `iss`
# constraint, `jwks_issuer` requires the token's `iss` to be the issuer, as edge_jwt's `iss` does.
#
# data.json (written by `fixtures`, see bench/src/edge_jwt.rs): `issuer`, `audience`. The key set is
# served by `jwks_server` (bench/src/jwks_server.rs: the same two keys as edge_jwt's data.json);
# bench/run.sh and bench/callgrind.sh configure the sidecar with it. Request mix: the edge JWT one
# (`load --expect edge_jwt_remote`, the same requests and answers as `edge_jwt`).
package envoy.authz

token := t if {
	[scheme, t] := split(input.attributes.request.http.headers.authorization, " ")
	lower(scheme) == "bearer"
}

claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(token, {
		"jwks_issuer": data.issuer,
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
