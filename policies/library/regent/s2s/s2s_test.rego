package regent.s2s_test

import data.regent.s2s
import data.regent.testdata.http

frontend := "spiffe://regent.example/ns/shop/sa/frontend"

billing := "spiffe://regent.example/ns/billing/sa/billing"

orders := "spiffe://regent.example/ns/shop/sa/orders"

call(from, to, method, path) := object.union(http(method, path, {}), {"attributes": {
	"source": {"principal": from},
	"destination": {"principal": to},
}})

test_listed_caller_method_and_path_allowed if {
	s2s.allow with input as call(frontend, orders, "GET", "/api/orders")
	s2s.allow with input as call(frontend, orders, "GET", "/api/orders/o-1")
	s2s.allow with input as call(frontend, orders, "POST", "/api/orders")
}

test_other_method_denied if {
	not s2s.allow with input as call(frontend, orders, "DELETE", "/api/orders/o-1")
	r := s2s.reason with input as call(frontend, orders, "DELETE", "/api/orders/o-1")
	r == "not_in_allow_list"
}

test_rules_are_per_caller if {
	# billing may refund, the frontend may not.
	s2s.allow with input as call(billing, orders, "POST", "/api/orders/o-1/refunds")
	not s2s.allow with input as call(frontend, orders, "POST", "/api/orders/o-1/refunds")
}

test_rules_are_per_callee if {
	# The frontend may read orders, but has no rule at all on billing.
	not s2s.allow with input as call(frontend, billing, "GET", "/api/invoices/i-1")
	s2s.allow with input as call("spiffe://regent.example/ns/ops/sa/reporting", billing, "GET", "/api/invoices/2026/01")
}

test_unlisted_caller_denied if not s2s.allow with input as call("spiffe://regent.example/ns/shop/sa/cart", orders, "GET", "/api/orders")

test_lookalike_trust_domain_denied if {
	not s2s.allow with input as call("spiffe://regent.example.evil/ns/shop/sa/frontend", orders, "GET", "/api/orders")
}

test_unknown_callee_denied if {
	req := call(frontend, "spiffe://regent.example/ns/shop/sa/unknown", "GET", "/api/orders")
	not s2s.allow with input as req
	s2s.reason == "unknown_callee" with input as req
}

test_no_peer_identity_denied if {
	req := http("GET", "/api/orders", {})
	not s2s.allow with input as req
	s2s.reason == "no_peer_identity" with input as req
}

test_headers_cannot_claim_an_identity if {
	req := object.union(http("GET", "/api/orders", {"x-forwarded-client-cert": concat("", ["URI=", frontend])}), {"attributes": {"destination": {"principal": orders}}})
	not s2s.allow with input as req
}

test_dot_segments_do_not_match_wildcards if {
	not s2s.allow with input as call(frontend, orders, "GET", "/api/orders/..")
}

test_health_open_without_identity if {
	s2s.allow with input as http("GET", "/healthz", {})
	s2s.allow with input as http("HEAD", "/readyz", {})
}

test_health_is_read_only if not s2s.allow with input as http("POST", "/healthz", {})

test_allowed_call_has_no_reason if not s2s.reason with input as call(frontend, orders, "GET", "/api/orders")
