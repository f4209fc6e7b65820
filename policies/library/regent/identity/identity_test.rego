package regent.identity_test

import data.regent.identity
import data.regent.testdata.http
import data.regent.testdata.tokens

with_token(token, extra) := http("GET", "/api/orders", object.union({"authorization": concat(" ", ["Bearer", token])}, extra))

test_headers_from_verified_claims if {
	h := identity.headers with input as with_token(tokens.erin_acme_admin, {})
	h == {
		"x-regent-subject": "erin",
		"x-regent-tenant": "acme",
		"x-regent-scopes": "orders:read orders:write users:admin",
	}
}

test_no_tenant_claim_no_tenant_header if {
	h := identity.headers with input as with_token(tokens.alice_no_tenant, {})
	not h["x-regent-tenant"]
	h["x-regent-subject"] == "alice"
}

test_actor_header_for_delegated_calls if {
	h := identity.headers with input as with_token(tokens.carol_via_bff, {})
	h["x-regent-actor"] == "spiffe://regent.example/ns/hr/sa/reviews-bff"
	h["x-regent-subject"] == "carol"
}

test_invalid_token_gives_no_headers if {
	h := identity.headers with input as with_token(tokens.wrong_key, {})
	h == {}
}

test_authorization_always_removed if {
	r := identity.headers_to_remove with input as with_token(tokens.alice, {})
	r == ["authorization"]
}

test_spoofed_tenant_removed_when_token_has_none if {
	r := identity.headers_to_remove with input as with_token(tokens.alice_no_tenant, {"x-regent-tenant": "globex", "x-regent-subject": "root"})

	# x-regent-subject is overwritten by the decision's headers, x-regent-tenant must go.
	r == ["authorization", "x-regent-tenant"]
}

test_unrelated_headers_kept if {
	r := identity.headers_to_remove with input as with_token(tokens.alice, {"x-request-id": "1", "regent-note": "x"})
	r == ["authorization"]
}
