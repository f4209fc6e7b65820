# Policy used by the end-to-end scenarios (the test is the policy author: it pushes this tree,
# then edits and pushes it again). Decisions are objects so headers, status and body are exercised.
package envoy.authz

import rego.v1

http_request := input.attributes.request.http

# Unmatched requests: 403 with a body the client sees.
default allow := {"allowed": false, "http_status": 403, "body": "forbidden by regent e2e policy", "headers": {"x-regent-denied": "policy"}}

# Public paths: allowed for anyone, no identity needed.
public if input.parsed_path[0] == "public"

allow := {"allowed": true} if public

# Permitted requests: the upstream learns who called and never sees x-remove-me.
allow := {
	"allowed": true,
	"headers": {"x-regent-subject": subject},
	"request_headers_to_remove": ["x-remove-me"],
} if {
	not public
	permitted
}

# No identity at all: 401 with a challenge.
allow := {
	"allowed": false,
	"http_status": 401,
	"body": "authentication required",
	"headers": {"www-authenticate": "Bearer realm=\"regent-e2e\""},
} if {
	not public
	not authenticated
}

authenticated if subject != ""

# Identity: the x-user header, except under /jwt/ where only a valid bearer token counts.
subject := http_request.headers["x-user"] if input.parsed_path[0] != "jwt"

subject := claims.sub if input.parsed_path[0] == "jwt"

roles := data.roles[subject]

bearer := t if {
	auth := http_request.headers.authorization
	startswith(auth, "Bearer ")
	t := substring(auth, 7, -1)
}

claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {
		"cert": json.marshal(data.jwt.jwks),
		"iss": data.jwt.issuer,
		"aud": data.jwt.audience,
	})
	valid
}

# REST API: readers and admins read; only admins write.
permitted if {
	input.parsed_path[0] == "api"
	http_request.method == "GET"
	some r in roles
	r in {"reader", "admin"}
}

permitted if {
	input.parsed_path[0] == "api"
	http_request.method in {"POST", "PUT", "DELETE"}
	"admin" in roles
}

# JWT-protected route: any valid token whose subject has a role.
permitted if {
	input.parsed_path[0] == "jwt"
	count(roles) > 0
}

# gRPC: readers read orders; refunds need an admin and, from the decoded body, at most 100.00.
permitted if {
	input.parsed_path == ["regent.example.v1.Orders", "GetOrder"]
	some r in roles
	r in {"reader", "admin"}
}

permitted if {
	input.parsed_path == ["regent.example.v1.Orders", "CreateRefund"]
	"admin" in roles
	to_number(input.parsed_body.amountCents) <= 10000
}
