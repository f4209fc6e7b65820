package envoy.authz_test

import data.envoy.authz
import data.envoy.testdata.tokens

# 2026-06-01T00:00:00Z: inside the demo tokens' validity, except `expired`.
now := 1780272000

req(method, path, headers) := {
	"attributes": {"request": {
		"time": {"seconds": now},
		"http": {"method": method, "path": path, "headers": headers},
	}},
	"parsed_path": split(trim_prefix(split(path, "?")[0], "/"), "/"),
	"parsed_query": {},
}

as_user(method, path, token) := req(method, path, {"authorization": concat(" ", ["Bearer", token])})

body(d) := json.unmarshal(d.body)

test_obvious_allow_alice_lists_orders if {
	d := authz.allow with input as as_user("GET", "/api/orders", tokens.alice)
	d.allowed == true
	d.headers == {"x-regent-subject": "alice", "x-regent-tenant": "acme", "x-regent-scopes": "orders:read orders:write"}
	d.request_headers_to_remove == ["authorization"]
	d.response_headers_to_add == {"x-regent-decision": "allowed"}
}

test_alice_reads_and_creates_orders if {
	r := authz.allow with input as as_user("GET", "/api/orders/42?expand=items", tokens.alice)
	r.allowed == true
	c := authz.allow with input as as_user("POST", "/api/orders", tokens.alice)
	c.allowed == true
}

test_obvious_deny_alice_cannot_delete if {
	d := authz.allow with input as as_user("DELETE", "/api/orders/42", tokens.alice)
	d.allowed == false
	d.http_status == 403
	d.headers["content-type"] == "application/json"
	body(d) == {"error": "forbidden", "reason": "missing scope orders:admin", "status": 403}
}

test_admin_can_delete if {
	d := authz.allow with input as as_user("DELETE", "/api/orders/42", tokens.admin)
	d.allowed == true
	d.headers["x-regent-subject"] == "root"
}

test_no_token_is_401_json if {
	d := authz.allow with input as req("GET", "/api/orders", {})
	d.allowed == false
	d.http_status == 401
	d.headers["www-authenticate"] == "Bearer realm=\"regent-demo\""
	d.headers["content-type"] == "application/json"
	body(d).error == "unauthenticated"
}

test_expired_token_is_401 if {
	d := authz.allow with input as as_user("GET", "/api/orders", tokens.expired)
	d.http_status == 401
}

test_token_from_other_key_is_401 if {
	d := authz.allow with input as as_user("GET", "/api/orders", tokens.wrong_key)
	d.http_status == 401
}

test_alg_none_is_401 if {
	[_, p, _] := io.jwt.decode(tokens.alice)
	unsigned := concat(".", [base64url.encode_no_pad(json.marshal({"alg": "none", "typ": "JWT"})), base64url.encode_no_pad(json.marshal(p)), ""])
	d := authz.allow with input as as_user("GET", "/api/orders", unsigned)
	d.http_status == 401
}

test_clock_skew if {
	# `expired` ends at 2026-01-01T00:01:00Z; 30 s of skew.
	ok := authz.allow with input as object.union(as_user("GET", "/api/orders", tokens.expired), {"attributes": {"request": {"time": {"seconds": 1767225600 + 89}}}})
	ok.allowed == true
	late := authz.allow with input as object.union(as_user("GET", "/api/orders", tokens.expired), {"attributes": {"request": {"time": {"seconds": 1767225600 + 90}}}})
	late.http_status == 401
}

test_clock_skew_before_nbf if {
	# Demo tokens are valid from 2026-01-01T00:00:00Z; a clock 30 s behind is still accepted.
	ok := authz.allow with input as object.union(as_user("GET", "/api/orders", tokens.alice), {"attributes": {"request": {"time": {"seconds": 1767225600 - 30}}}})
	ok.allowed == true
	early := authz.allow with input as object.union(as_user("GET", "/api/orders", tokens.alice), {"attributes": {"request": {"time": {"seconds": 1767225600 - 31}}}})
	early.http_status == 401
}

test_tokens_work_on_the_live_clock if {
	# No request time: the sidecar's clock is used; demo tokens are valid until 2100.
	d := authz.allow with input as json.remove(as_user("GET", "/api/orders", tokens.alice), ["attributes/request/time"])
	d.allowed == true
}

test_unknown_route_is_403_with_reason if {
	d := authz.allow with input as as_user("GET", "/admin", tokens.admin)
	d.http_status == 403
	body(d).reason == "no route for GET /admin"
}

test_health_and_public_open if {
	h := authz.allow with input as req("GET", "/health", {})
	h.allowed == true
	p := authz.allow with input as req("GET", "/public/index.html", {})
	p.allowed == true
}

test_public_strips_spoofed_identity if {
	d := authz.allow with input as req("GET", "/public/x", {"x-regent-subject": "root"})
	d.request_headers_to_remove == ["x-regent-subject"]
}

test_spoofed_identity_headers_removed_or_overwritten if {
	d := authz.allow with input as req("GET", "/api/orders", {"authorization": concat(" ", ["Bearer", tokens.alice]), "x-regent-subject": "root", "x-regent-role": "admin"})
	d.headers["x-regent-subject"] == "alice"
	d.request_headers_to_remove == ["authorization", "x-regent-role"]
}

test_dot_segments_do_not_match if {
	d := authz.allow with input as as_user("DELETE", "/api/orders/..", tokens.admin)
	d.allowed == false
}
