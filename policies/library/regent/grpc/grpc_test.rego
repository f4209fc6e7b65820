package regent.grpc_test

import data.regent.grpc
import data.regent.testdata.t0
import data.regent.testdata.tokens

importer := "spiffe://regent.example/ns/shop/sa/importer"

# A unary call to regent.example.v1.Orders/<rpc> as the sidecar presents it with proto/orders.pb.
call(rpc, message, token) := {
	"attributes": {"request": {
		"time": {"seconds": t0},
		"http": {
			"method": "POST",
			"path": concat("/", ["", "regent.example.v1.Orders", rpc]),
			"headers": {"content-type": "application/grpc", "authorization": concat(" ", ["Bearer", token])},
		},
	}},
	"parsed_path": ["regent.example.v1.Orders", rpc],
	"parsed_body": message,
	"truncated_body": false,
}

from_peer(req, principal) := object.union(req, {"attributes": {"source": {"principal": principal}}})

test_get_order_own_tenant if grpc.allow with input as call("GetOrder", {"orderId": "o-1", "tenantId": "acme"}, tokens.alice_read_only)

test_get_order_other_tenant_in_body_denied if {
	not grpc.allow with input as call("GetOrder", {"orderId": "o-9", "tenantId": "globex"}, tokens.alice_read_only)
}

test_get_order_without_tenant_field_denied if not grpc.allow with input as call("GetOrder", {"orderId": "o-1"}, tokens.alice_read_only)

test_get_order_needs_read_scope if not grpc.allow with input as call("GetOrder", {"tenantId": "acme"}, tokens.carol_via_bff)

test_get_order_invalid_token_denied if not grpc.allow with input as call("GetOrder", {"tenantId": "acme"}, tokens.wrong_key)

test_create_refund_allowed if {
	grpc.allow with input as call("CreateRefund", {"orderId": "o-1", "tenantId": "acme", "amountCents": "1500"}, tokens.alice_refund)
}

test_create_refund_needs_refund_scope if {
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-1", "tenantId": "acme", "amountCents": "1500"}, tokens.alice)
}

test_create_refund_old_order_denied if {
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-old", "tenantId": "acme", "amountCents": "100"}, tokens.alice_refund)
}

test_create_refund_amount_checked if {
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-1", "tenantId": "acme", "amountCents": "12001"}, tokens.alice_refund)
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-1", "tenantId": "acme", "amountCents": "-1"}, tokens.alice_refund)
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-1", "tenantId": "acme", "amountCents": "1e3"}, tokens.alice_refund)
}

test_create_refund_zero_amount_left_out_denied if {
	# protojson leaves default (zero) fields out: no amountCents at all.
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-1", "tenantId": "acme"}, tokens.alice_refund)
}

test_create_refund_other_tenant_denied if {
	not grpc.allow with input as call("CreateRefund", {"orderId": "o-9", "tenantId": "globex", "amountCents": "100"}, tokens.alice_refund)
}

test_upload_orders_by_importer_identity if {
	# Client-streaming: parsed_body is null; the importer needs no user token.
	grpc.allow with input as from_peer(call("UploadOrders", null, ""), importer)
}

test_upload_orders_refused_to_users if not grpc.allow with input as call("UploadOrders", null, tokens.erin_acme_admin)

test_upload_orders_refused_to_other_services if {
	not grpc.allow with input as from_peer(call("UploadOrders", null, ""), "spiffe://regent.example/ns/shop/sa/frontend")
}

test_unknown_method_denied if {
	not grpc.allow with input as from_peer(call("DeleteOrder", {"tenantId": "acme"}, tokens.erin_acme_admin), importer)
}

test_unknown_service_denied if {
	req := object.union(call("GetOrder", {"tenantId": "acme"}, tokens.alice), {"parsed_path": ["regent.example.v1.Admin", "GetOrder"]})
	not grpc.allow with input as req
}

test_truncated_body_denied if {
	req := object.union(call("GetOrder", {"tenantId": "acme"}, tokens.alice), {"truncated_body": true, "parsed_body": null})
	not grpc.allow with input as req
}

test_non_grpc_content_type_denied if {
	req := object.union(call("GetOrder", {"tenantId": "acme"}, tokens.alice), {"attributes": {"request": {"http": {"headers": {"content-type": "application/json"}}}}})
	not grpc.allow with input as req
}
