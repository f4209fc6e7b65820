package regent.tenants_test

import data.regent.tenants
import data.regent.testdata.bearer
import data.regent.testdata.tokens

test_own_tenant_collection if tenants.allow with input as bearer("GET", "/api/tenants/acme/orders", tokens.alice)

test_own_tenant_order if tenants.allow with input as bearer("GET", "/api/tenants/acme/orders/o-1", tokens.alice)

test_own_tenant_order_subresource if tenants.allow with input as bearer("GET", "/api/tenants/acme/orders/o-2/items", tokens.alice)

test_other_tenant_in_path_denied if {
	req := bearer("GET", "/api/tenants/globex/orders", tokens.alice)
	not tenants.allow with input as req
	tenants.reason == "cross_tenant" with input as req
}

test_other_tenants_order_under_own_path_denied if {
	# BOLA: o-9 belongs to globex; alice asks for it under her own tenant.
	req := bearer("GET", "/api/tenants/acme/orders/o-9", tokens.alice)
	not tenants.allow with input as req
	tenants.reason == "object_not_in_tenant" with input as req
}

test_unknown_order_denied if not tenants.allow with input as bearer("GET", "/api/tenants/acme/orders/o-404", tokens.alice)

test_other_tenant_sees_own_orders if tenants.allow with input as bearer("GET", "/api/tenants/globex/orders/o-9", tokens.bob_globex)

test_write_needs_write_scope if {
	not tenants.allow with input as bearer("POST", "/api/tenants/acme/orders", tokens.alice_read_only)
	tenants.allow with input as bearer("POST", "/api/tenants/acme/orders", tokens.alice)
}

test_unknown_method_denied if not tenants.allow with input as bearer("TRACE", "/api/tenants/acme/orders", tokens.alice)

test_token_without_tenant_denied if {
	req := bearer("GET", "/api/tenants/acme/orders", tokens.alice_no_tenant)
	not tenants.allow with input as req
	tenants.reason == "no_tenant_claim" with input as req
}

test_tenant_admin_manages_own_tenant_users if tenants.allow with input as bearer("PUT", "/api/tenants/acme/users/alice", tokens.erin_acme_admin)

test_tenant_admin_is_per_tenant if not tenants.allow with input as bearer("PUT", "/api/tenants/globex/users/bob", tokens.erin_acme_admin)

test_member_cannot_manage_users if not tenants.allow with input as bearer("GET", "/api/tenants/acme/users", tokens.alice)

test_owner_reads_own_documents if tenants.allow with input as bearer("GET", "/api/users/alice/documents/d-1", tokens.alice)

test_other_user_documents_denied if not tenants.allow with input as bearer("GET", "/api/users/erin/documents/d-1", tokens.alice)

test_tenant_admin_reads_documents_of_own_tenant if tenants.allow with input as bearer("GET", "/api/users/alice/documents", tokens.erin_acme_admin)

test_tenant_admin_cannot_read_other_tenants_documents if not tenants.allow with input as bearer("GET", "/api/users/bob/documents", tokens.erin_acme_admin)

test_invalid_token_denied if {
	req := bearer("GET", "/api/tenants/acme/orders", tokens.expired)
	not tenants.allow with input as req
	tenants.reason == "invalid_token" with input as req
}

test_unrouted_path_denied if not tenants.allow with input as bearer("GET", "/api/tenants/acme", tokens.erin_acme_admin)

test_allowed_has_no_reason if not tenants.reason with input as bearer("GET", "/api/tenants/acme/orders", tokens.alice)
