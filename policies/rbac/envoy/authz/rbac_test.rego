package envoy.authz_test

import data.envoy.authz

jwt_metadata(sub) := {"filterMetadata": {"envoy.filters.http.jwt_authn": {"verified_jwt": {"sub": sub}}}}

req(method, path, sub) := {
	"attributes": {
		"request": {"http": {"method": method, "path": path, "headers": {}}},
		"metadataContext": jwt_metadata(sub),
	},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
}

allowed(method, path, sub) if authz.allow with input as req(method, path, sub)

test_viewer_reads_orders_in_own_tenant if {
	allowed("GET", "/api/v1/tenants/tenant-10/orders", "user-010")
	allowed("GET", "/api/v1/tenants/tenant-10/orders/o-1/items", "user-010")
	allowed("HEAD", "/api/v1/tenants/tenant-10/customers/c-1", "user-010")
}

test_viewer_cannot_write if {
	not allowed("POST", "/api/v1/tenants/tenant-10/orders", "user-010")
	not allowed("DELETE", "/api/v1/tenants/tenant-10/orders/o-1", "user-010")
}

test_viewer_cannot_read_other_resources if not allowed("GET", "/api/v1/tenants/tenant-10/invoices", "user-010")

test_roles_are_per_tenant if {
	not allowed("GET", "/api/v1/tenants/tenant-11/orders", "user-010")
	allowed("GET", "/api/v1/tenants/tenant-14/orders", "user-013")
	not allowed("PUT", "/api/v1/tenants/tenant-14/customers/c-1", "user-013")
	allowed("PUT", "/api/v1/tenants/tenant-13/customers/c-1", "user-013")
}

test_manager_writes_orders if {
	allowed("POST", "/api/v1/tenants/tenant-12/orders", "user-012")
	allowed("PATCH", "/api/v1/tenants/tenant-12/orders/o-1", "user-012")
	not allowed("PUT", "/api/v1/tenants/tenant-12/customers/c-1", "user-012")
}

test_wildcard_methods if {
	allowed("DELETE", "/api/v1/tenants/tenant-16/invoices/i-1", "user-016")
	allowed("GET", "/api/v1/tenants/tenant-16/orders", "user-016")
	not allowed("POST", "/api/v1/tenants/tenant-16/orders", "user-016")
}

test_tenant_admin_has_every_resource_of_its_tenant_only if {
	allowed("PUT", "/api/v1/tenants/tenant-15/users/u-1", "user-015")
	allowed("DELETE", "/api/v1/tenants/tenant-15/anything/x", "user-015")
	not allowed("GET", "/api/v1/tenants/tenant-14/orders", "user-015")
	not allowed("GET", "/api/v1/catalog", "user-015")
}

test_platform_admin_everywhere if {
	allowed("DELETE", "/api/v1/tenants/tenant-19/orders/o-1", "user-000")
	allowed("POST", "/api/v1/catalog/items", "user-000")
	allowed("GET", "/api/v1/tenants", "user-000")
}

test_auditor_reads_everything_writes_nothing if {
	allowed("GET", "/api/v1/audit/events", "user-003")
	allowed("GET", "/api/v1/tenants", "user-003")
	allowed("GET", "/api/v1/tenants/tenant-08/invoices", "user-003")
	not allowed("POST", "/api/v1/tenants/tenant-08/invoices", "user-003")
	not allowed("GET", "/api/v1/catalog", "user-003")
}

test_catalog_editor if {
	allowed("PUT", "/api/v1/catalog/items/sku-1", "user-005")
	not allowed("GET", "/api/v1/audit", "user-005")
}

test_tenant_roles_do_not_grant_global_resources if not allowed("GET", "/api/v1/tenants", "user-010")

test_unknown_user_denied if not allowed("GET", "/api/v1/tenants/tenant-10/orders", "user-999")

test_no_identity_denied if {
	not authz.allow with input as {"attributes": {"request": {"http": {"method": "GET", "path": "/api/v1/tenants/tenant-10/orders", "headers": {}}}}, "parsed_path": ["api", "v1", "tenants", "tenant-10", "orders"]}
}

test_subject_header_trusted_only_from_the_edge if {
	base := {
		"attributes": {"request": {"http": {"method": "GET", "path": "/", "headers": {"x-regent-subject": "user-010"}}}},
		"parsed_path": ["api", "v1", "tenants", "tenant-10", "orders"],
	}
	edge := object.union(base, {"attributes": {"source": {"principal": "spiffe://regent.example/ns/edge/sa/gateway"}}})
	other := object.union(base, {"attributes": {"source": {"principal": "spiffe://regent.example/ns/shop/sa/frontend"}}})
	authz.allow with input as edge
	not authz.allow with input as other
	not authz.allow with input as base
}

test_verified_jwt_wins_over_header if {
	r := object.union(req("GET", "/api/v1/tenants/tenant-10/orders", "user-011"), {"attributes": {
		"source": {"principal": "spiffe://regent.example/ns/edge/sa/gateway"},
		"request": {"http": {"headers": {"x-regent-subject": "user-010"}}},
	}})
	not authz.allow with input as r
}

test_malformed_paths_denied if {
	not allowed("GET", "/api/v1/tenants//orders", "user-000")
	not allowed("GET", "/api/v1/tenants/tenant-10", "user-010")
	not allowed("GET", "/api/v2/tenants/tenant-10/orders", "user-000")
	not allowed("GET", "/", "user-000")
}

test_health_open if {
	authz.allow with input as {"attributes": {"request": {"http": {"method": "GET", "path": "/healthz"}}}, "parsed_path": ["healthz"]}
	not authz.allow with input as {"attributes": {"request": {"http": {"method": "POST", "path": "/healthz"}}}, "parsed_path": ["healthz"]}
}

test_bindings_data_is_realistic_size if {
	count(data.envoy.authz.bindings) == 200
	count(data.envoy.authz.roles) == 9
	tenants := {t | some b in data.envoy.authz.bindings; some t, _ in b.tenants}
	count(tenants) == 20
}

test_every_bound_role_exists if {
	every b in data.envoy.authz.bindings {
		every roles in object.get(b, "tenants", {}) {
			every r in roles {
				data.envoy.authz.roles[r].tenant
			}
		}
		every r in object.get(b, "global", []) {
			data.envoy.authz.roles[r].global
		}
	}
}
