package regent.obo_test

import data.regent.obo
import data.regent.testdata.bearer
import data.regent.testdata.tokens

bff := "spiffe://regent.example/ns/hr/sa/reviews-bff"

# GET of a review by the workload `peer` with `token`.
get_review(id, token, peer) := object.union(
	bearer("GET", concat("/", ["", "api", "reviews", id]), token),
	{"attributes": {"source": {"principal": peer}}},
)

test_manager_reads_review_in_own_department if obo.allow with input as get_review("r-100", tokens.carol_via_bff, bff)

test_employee_reads_own_review if obo.allow with input as get_review("r-100", tokens.dave_via_bff, bff)

test_employee_cannot_read_managers_review if {
	req := get_review("r-101", tokens.dave_via_bff, bff)
	not obo.allow with input as req
	obo.reason == "denied_for_user" with input as req
}

test_manager_of_other_department_denied if not obo.allow with input as get_review("r-100", tokens.frank_via_bff, bff)

test_manager_reads_own_department_only if {
	obo.allow with input as get_review("r-200", tokens.frank_via_bff, bff)
	not obo.allow with input as get_review("r-200", tokens.carol_via_bff, bff)
}

test_unknown_review_denied if not obo.allow with input as get_review("r-999", tokens.carol_via_bff, bff)

test_token_must_be_exchanged if {
	req := get_review("r-100", tokens.carol_direct, bff)
	not obo.allow with input as req
	obo.reason == "no_actor" with input as req
}

test_actor_must_be_the_mtls_peer if {
	# The BFF's token, presented by another workload.
	req := get_review("r-100", tokens.carol_via_bff, "spiffe://regent.example/ns/hr/sa/mallory")
	not obo.allow with input as req
	obo.reason == "actor_is_not_the_caller" with input as req
}

test_actor_must_be_allowed_on_the_route if {
	mallory := "spiffe://regent.example/ns/hr/sa/mallory"
	req := get_review("r-100", tokens.carol_via_mallory, mallory)
	not obo.allow with input as req
	obo.reason == "actor_not_allowed" with input as req
}

test_no_mtls_peer_denied if {
	req := bearer("GET", "/api/reviews/r-100", tokens.carol_via_bff)
	not obo.allow with input as req
}

test_scope_required if not obo.allow with input as get_review("r-100", tokens.carol_via_bff_no_scope, bff)

test_invalid_token_denied if {
	req := get_review("r-100", tokens.wrong_key, bff)
	not obo.allow with input as req
	obo.reason == "invalid_token" with input as req
}

test_only_routed_methods if {
	req := object.union(get_review("r-100", tokens.carol_via_bff, bff), {"attributes": {"request": {"http": {"method": "DELETE"}}}})
	not obo.allow with input as req
}

test_user_attributes_come_from_the_directory if {
	# Demoting carol in the directory revokes her manager access at once.
	not obo.allow with input as get_review("r-100", tokens.carol_via_bff, bff)
		with data.regent.obo.users.carol as {"department": "engineering", "manager": false}
}
