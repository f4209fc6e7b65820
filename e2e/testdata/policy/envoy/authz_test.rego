package envoy.authz_test

import rego.v1

import data.envoy.authz

req(method, path, user) := {
	"attributes": {"request": {"http": {"method": method, "path": path, "headers": {"x-user": user}}}},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
}

test_reader_reads if {
	authz.allow.allowed with input as req("GET", "/api/items", "bob")
}

test_reader_cannot_delete if {
	not authz.allow.allowed with input as req("DELETE", "/api/items/1", "bob")
}

test_admin_deletes if {
	authz.allow.allowed with input as req("DELETE", "/api/items/1", "alice")
}

test_anonymous_gets_401 if {
	authz.allow.http_status == 401 with input as req("GET", "/api/items", "")
}
