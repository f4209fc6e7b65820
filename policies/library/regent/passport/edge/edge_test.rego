package regent.passport.edge_test

import data.regent.passport.edge
import data.regent.testdata.bearer
import data.regent.testdata.http
import data.regent.testdata.tokens

# `regent test` has no passport keys (regent.passport.mint is undefined there), so the minted
# token is replaced; the spec it would be minted from is checked on its own.

test_a_routed_request_gets_a_passport_and_loses_the_users_token if {
	req := object.union(bearer("GET", "/api/orders/o-1", tokens.alice), {"attributes": {"request": {"http": {"headers": {
		"authorization": concat(" ", ["Bearer", tokens.alice]),
		"x-regent-passport": "forged-by-the-client",
		"x-regent-tenant": "globex",
	}}}}})
	d := edge.allow with input as req with data.regent.passport.edge.passport as "minted"
	d.allowed == true
	d.headers == {"x-regent-passport": "minted"}
	d.request_headers_to_remove == ["authorization", "x-regent-tenant"]
}

test_the_passport_is_for_the_routes_audience_with_the_selected_claims if {
	s := edge.spec with input as bearer("GET", "/api/orders", tokens.alice)
	s == {
		"aud": "orders",
		"sub": "alice",
		"claims": {"tenant": "acme", "scope": "orders:read orders:write", "email": "alice@acme.example"},
		"ttl_seconds": 60,
	}
}

test_a_delegated_token_keeps_its_actor_in_the_passport if {
	s := edge.spec with input as bearer("GET", "/api/reviews/r-1", tokens.carol_via_bff)
	s.aud == "reviews"
	s.sub == "carol"
	s.act == {"sub": "spiffe://regent.example/ns/hr/sa/reviews-bff"}
}

test_without_a_token_the_edge_answers_401_and_mints_nothing if {
	d := edge.allow with input as http("GET", "/api/orders", {}) with data.regent.passport.edge.passport as "minted"
	d.allowed == false
	d.http_status == 401
	d.headers["www-authenticate"] == "Bearer realm=\"regent\""
}

test_an_expired_token_is_401 if {
	d := edge.allow with input as bearer("GET", "/api/orders", tokens.expired) with data.regent.passport.edge.passport as "minted"
	d.http_status == 401
	json.unmarshal(d.body) == {"error": "invalid_token"}
}

test_an_unrouted_path_is_403_no_route if {
	d := edge.allow with input as bearer("GET", "/api/secrets", tokens.alice) with data.regent.passport.edge.passport as "minted"
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "no_route"}
}

test_missing_scopes_are_403 if {
	d := edge.allow with input as bearer("POST", "/api/orders", tokens.alice_read_only) with data.regent.passport.edge.passport as "minted"
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "insufficient_scope"}
}

test_without_a_signing_key_the_request_is_not_forwarded if {
	# No `with` for the passport: regent.passport.mint is undefined without identity.passport.
	d := edge.allow with input as bearer("GET", "/api/orders", tokens.alice)
	d.allowed == false
	d.http_status == 503
	json.unmarshal(d.body) == {"error": "passport_unavailable"}
}
