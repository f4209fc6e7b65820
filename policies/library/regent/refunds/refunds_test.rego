package regent.refunds_test

import data.regent.refunds
import data.regent.testdata.at
import data.regent.testdata.bearer
import data.regent.testdata.tokens

refund(order_id, amount, token) := object.union(
	bearer("POST", concat("/", ["", "api", "orders", order_id, "refunds"]), token),
	{"parsed_body": {"amount_cents": amount}},
)

test_recent_order_refunded_with_scope if refunds.allow with input as refund("o-1", 1500, tokens.alice_refund)

test_full_amount_allowed if refunds.allow with input as refund("o-1", 12000, tokens.alice_refund)

test_scope_required if {
	req := refund("o-1", 1500, tokens.alice)
	not refunds.allow with input as req
	refunds.reason == "missing_scope" with input as req
}

test_forged_scope_refused if {
	req := refund("o-1", 1500, tokens.tampered_scope)
	not refunds.allow with input as req
	refunds.reason == "invalid_token" with input as req
}

test_order_older_than_90_days_refused if {
	req := refund("o-old", 100, tokens.alice_refund)
	not refunds.allow with input as req
	refunds.reason == "order_too_old" with input as req
}

test_age_bound_is_strict if {
	# At T0, o-89d is 89 days 23:59:59 old, o-90d exactly 90 days.
	refunds.allow with input as refund("o-89d", 100, tokens.alice_refund)
	not refunds.allow with input as refund("o-90d", 100, tokens.alice_refund)
}

test_order_ages_with_the_request_time if {
	# One second later, o-89d turns 90 days old.
	not refunds.allow with input as at(refund("o-89d", 100, tokens.alice_refund), 1)
}

test_other_tenants_order_refused if not refunds.allow with input as refund("o-9", 100, tokens.alice_refund)

test_unknown_order_refused if {
	req := refund("o-404", 100, tokens.alice_refund)
	not refunds.allow with input as req
	refunds.reason == "unknown_order" with input as req
}

test_amount_over_total_refused if not refunds.allow with input as refund("o-1", 12001, tokens.alice_refund)

test_non_positive_amount_refused if {
	not refunds.allow with input as refund("o-1", 0, tokens.alice_refund)
	not refunds.allow with input as refund("o-1", -5, tokens.alice_refund)
}

test_non_numeric_amount_refused if not refunds.allow with input as refund("o-1", "1500", tokens.alice_refund)

test_missing_body_refused if {
	req := bearer("POST", "/api/orders/o-1/refunds", tokens.alice_refund)
	not refunds.allow with input as req
}

test_only_post if {
	req := object.union(refund("o-1", 100, tokens.alice_refund), {"attributes": {"request": {"http": {"method": "PUT"}}}})
	not refunds.allow with input as req
}

test_only_the_refund_path if not refunds.allow with input as object.union(
	bearer("POST", "/api/orders/o-1/refunds/extra", tokens.alice_refund),
	{"parsed_body": {"amount_cents": 100}},
)
