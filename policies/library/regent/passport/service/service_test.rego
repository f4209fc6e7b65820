package regent.passport.service_test

import data.regent.passport.service
import data.regent.testdata.http

# `regent test` has no trusted keys (regent.passport.verify is undefined there), so the verified
# claims are replaced; what verification itself refuses (signature, audience, expiry, replay) is
# tested in the builtin's unit tests and end to end.

passport_req(method, path) := http(method, path, {"x-regent-passport": "a-passport"})

alice := {
	"iss": "https://edge.regent.example", "aud": "orders", "sub": "alice",
	"scope": "orders:read orders:write", "jti": "j1", "iat": 0, "nbf": 0, "exp": 60,
}

bff := "spiffe://regent.example/ns/shop/sa/orders-bff"

test_the_users_own_passport_reads_orders if {
	d := service.allow with input as passport_req("GET", "/api/orders/o-1") with data.regent.passport.service.claims as alice
	d.allowed == true
	d.headers == {"x-regent-subject": "alice"}
}

test_without_a_passport_the_service_answers_401 if {
	d := service.allow with input as http("GET", "/api/orders/o-1", {})
	d.http_status == 401
	json.unmarshal(d.body) == {"error": "invalid_passport"}
}

test_a_passport_that_does_not_verify_is_401 if {
	# No `with`: regent.passport.verify is undefined here, as for a bad passport in a sidecar.
	d := service.allow with input as passport_req("GET", "/api/orders/o-1")
	d.http_status == 401
}

test_a_users_token_in_authorization_is_not_a_passport if {
	d := service.allow with input as http("GET", "/api/orders/o-1", {"authorization": "Bearer user-token"})
	d.http_status == 401
}

test_an_allowed_actor_calls_on_behalf_of_the_user if {
	claims := object.union(alice, {"act": {"sub": bff}})
	d := service.allow with input as passport_req("GET", "/api/orders") with data.regent.passport.service.claims as claims
	d.allowed == true
}

test_another_actor_is_refused if {
	claims := object.union(alice, {"act": {"sub": "spiffe://regent.example/ns/shop/sa/mallory"}})
	d := service.allow with input as passport_req("GET", "/api/orders") with data.regent.passport.service.claims as claims
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "actor_not_allowed"}
}

test_a_delegation_chain_is_refused if {
	claims := object.union(alice, {"act": {"sub": bff, "act": {"sub": "spiffe://x/sa/other"}}})
	d := service.allow with input as passport_req("GET", "/api/orders") with data.regent.passport.service.claims as claims
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "delegation_chain"}
}

test_a_route_for_actors_only_refuses_the_users_own_call if {
	claims := object.union(alice, {"scope": "orders:refund"})
	d := service.allow with input as passport_req("POST", "/api/orders/o-1/refunds") with data.regent.passport.service.claims as claims
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "direct_call_not_allowed"}
	desk := object.union(claims, {"act": {"sub": "spiffe://regent.example/ns/shop/sa/support-desk"}})
	ok := service.allow with input as passport_req("POST", "/api/orders/o-1/refunds") with data.regent.passport.service.claims as desk
	ok.allowed == true
}

test_missing_scope_and_unknown_routes_are_403 if {
	read_only := object.union(alice, {"scope": "orders:read"})
	d := service.allow with input as passport_req("POST", "/api/orders") with data.regent.passport.service.claims as read_only
	json.unmarshal(d.body) == {"error": "insufficient_scope"}
	e := service.allow with input as passport_req("GET", "/api/secrets") with data.regent.passport.service.claims as alice
	json.unmarshal(e.body) == {"error": "no_route"}
}
