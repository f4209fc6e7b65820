package regent.edge_test

import data.regent.edge
import data.regent.testdata.bearer
import data.regent.testdata.http
import data.regent.testdata.tokens

test_read_scope_allows_listing_orders if {
	d := edge.allow with input as bearer("GET", "/api/orders", tokens.alice_read_only)
	d.allowed == true
}

test_read_scope_allows_one_order if {
	d := edge.allow with input as bearer("GET", "/api/orders/o-1?expand=items", tokens.alice_read_only)
	d.allowed == true
}

test_write_needs_write_scope if {
	d := edge.allow with input as bearer("POST", "/api/orders", tokens.alice_read_only)
	d.allowed == false
	d.http_status == 403
	json.unmarshal(d.body) == {"error": "insufficient_scope", "scope": "orders:write"}
	d.headers["www-authenticate"] == "Bearer realm=\"regent\", error=\"insufficient_scope\", scope=\"orders:write\""
}

test_write_scope_allows_create if {
	d := edge.allow with input as bearer("POST", "/api/orders", tokens.alice)
	d.allowed == true
}

test_refund_route_needs_refund_scope if {
	denied := edge.allow with input as bearer("POST", "/api/orders/o-1/refunds", tokens.alice)
	denied.http_status == 403
	allowed := edge.allow with input as bearer("POST", "/api/orders/o-1/refunds", tokens.alice_refund)
	allowed.allowed == true
}

test_method_not_routed_is_denied if {
	d := edge.allow with input as bearer("DELETE", "/api/orders/o-1", tokens.alice)
	d.allowed == false
	json.unmarshal(d.body) == {"error": "no_route"}
}

test_unknown_path_is_denied if {
	d := edge.allow with input as bearer("GET", "/api/secrets", tokens.erin_acme_admin)
	d.allowed == false
	d.http_status == 403
}

test_trailing_slash_is_a_different_path if {
	d := edge.allow with input as bearer("GET", "/api/orders/", tokens.alice)
	d.allowed == false
}

test_admin_subtree_needs_admin_scope if {
	denied := edge.allow with input as bearer("GET", "/api/users/u-1/sessions", tokens.alice)
	denied.allowed == false
	allowed := edge.allow with input as bearer("DELETE", "/api/users/u-1/sessions", tokens.erin_acme_admin)
	allowed.allowed == true
}

test_missing_token_is_401_with_bare_challenge if {
	d := edge.allow with input as http("GET", "/api/orders", {})
	d.allowed == false
	d.http_status == 401
	d.headers["www-authenticate"] == "Bearer realm=\"regent\""
	json.unmarshal(d.body) == {"error": "missing_token"}
}

test_invalid_tokens_are_401_invalid_token if {
	every name in ["expired", "not_yet_valid", "wrong_aud", "wrong_iss", "alg_none", "wrong_key", "unexpected_alg_rs384", "hs256_with_public_key", "tampered_scope", "no_exp"] {
		invalid_token_answer(name)
	}
}

invalid_token_answer(name) if {
	d := edge.allow with input as bearer("GET", "/api/orders", tokens[name])
	d.allowed == false
	d.http_status == 401
	d.headers["www-authenticate"] == "Bearer realm=\"regent\", error=\"invalid_token\""
}

test_tampered_scope_cannot_reach_refunds if {
	d := edge.allow with input as bearer("POST", "/api/orders/o-1/refunds", tokens.tampered_scope)
	d.http_status == 401
}

test_health_is_public if {
	d := edge.allow with input as http("GET", "/healthz", {})
	d.allowed == true
}

test_public_subtree_is_public if {
	d := edge.allow with input as http("GET", "/public/logo.svg", {})
	d.allowed == true
}

test_public_is_get_only if {
	d := edge.allow with input as http("POST", "/healthz", {})
	d.allowed == false
	d.http_status == 401
}

test_public_route_strips_client_identity_headers if {
	d := edge.allow with input as http("GET", "/public/x", {"x-regent-subject": "root", "X-Regent-Tenant": "acme"})
	d.allowed == true
	d.request_headers_to_remove == ["x-regent-subject", "x-regent-tenant"]
}

test_public_route_with_token_still_strips_spoofed_headers if {
	req := http("GET", "/public/x", {"authorization": concat(" ", ["Bearer", tokens.alice]), "x-regent-subject": "root"})
	d := edge.allow with input as req
	d.request_headers_to_remove == ["x-regent-subject"]
}

test_allow_carries_identity_headers if {
	d := edge.allow with input as bearer("GET", "/api/orders", tokens.alice)
	d.headers == {
		"x-regent-subject": "alice",
		"x-regent-tenant": "acme",
		"x-regent-scopes": "orders:read orders:write",
	}
	d.request_headers_to_remove == ["authorization"]
}
