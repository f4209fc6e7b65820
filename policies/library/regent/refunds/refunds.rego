# A sensitive operation: refunds (decision path `regent/refunds/allow`).
#
# POST /api/orders/{id}/refunds with a JSON body {"amount_cents": N} is allowed only when:
# - the token (regent.jwt) is valid and holds scope `orders:refund` (the scope is granted to few
#   clients; a token for orders:write is not enough);
# - the order is the caller's tenant's (data.regent.refunds.orders, an order index published with
#   the bundle: the policy needs the order's date and total, which the request cannot be trusted
#   to carry);
# - the order is younger than max_order_age_days (90) at the request time;
# - 0 < amount_cents <= the order's total.
# The gRPC CreateRefund call (regent.grpc) applies the same `refundable` rule.
package regent.refunds

import data.regent.jwt

default allow := false

allow if {
	input.attributes.request.http.method == "POST"
	[order_id] := refund_path
	refundable(order_id, jwt.claims.tenant, input.parsed_body.amount_cents)
}

# /api/orders/{id}/refunds -> [id]
refund_path := [id] if {
	["api", "orders", id, "refunds"] = input.parsed_path
}

ns_per_day := (24 * 3600) * 1000000000

# True when the verified caller of tenant `tenant` may refund `amount` cents of order `order_id`.
refundable(order_id, tenant, amount) if {
	"orders:refund" in jwt.scopes
	order := data.regent.refunds.orders[order_id]
	order.tenant == tenant
	jwt.now_ns - time.parse_rfc3339_ns(order.created_at) < data.regent.refunds.max_order_age_days * ns_per_day
	is_number(amount)
	amount > 0
	amount <= order.amount_cents
}

# Why a refund was denied, for the decision log (undefined when allowed).
reason := "invalid_token" if {
	not jwt.valid
} else := "missing_scope" if {
	not "orders:refund" in jwt.scopes
} else := "unknown_order" if {
	not allow
	[id] := refund_path
	not data.regent.refunds.orders[id]
} else := "order_too_old" if {
	not allow
	[id] := refund_path
	order := data.regent.refunds.orders[id]
	jwt.now_ns - time.parse_rfc3339_ns(order.created_at) >= data.regent.refunds.max_order_age_days * ns_per_day
} else := "forbidden" if {
	not allow
}
