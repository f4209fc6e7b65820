# Tests of data.system.log.mask (the package lives under the `system/log` root; its tests sit under
# `regent` like every other test of this bundle).
package regent.logmask_test

import data.system.log

event(request) := {"decision_id": "d-1", "input": request, "result": true}

request := {
	"attributes": {
		"source": {"address": {"socketAddress": {"address": "10.0.0.5", "portValue": 51234}}},
		"request": {"http": {
			"method": "POST",
			"path": "/api/users",
			"headers": {"authorization": "Bearer x", "content-type": "application/json"},
			"body": "{\"email\":\"a@example.com\",\"name\":\"Alice\",\"plan\":\"pro\"}",
		}},
	},
	"parsed_path": ["api", "users"],
	"parsed_query": {},
	"parsed_body": {"email": "a@example.com", "name": "Alice", "plan": "pro"},
}

test_credentials_and_client_address_always_masked if {
	m := log.mask with input as event({})
	"/input/attributes/request/http/headers/authorization" in m
	"/input/attributes/request/http/headers/cookie" in m
	"/input/attributes/request/http/headers/proxy-authorization" in m
	"/input/attributes/source/address" in m
	"/input/attributes/metadataContext/filterMetadata/envoy.filters.http.jwt_authn" in m
}

test_personal_body_fields_and_raw_body_masked if {
	m := log.mask with input as event(request)
	"/input/parsed_body/email" in m
	"/input/parsed_body/name" in m
	"/input/attributes/request/http/body" in m
	"/input/attributes/request/http/rawBody" in m
}

test_other_body_fields_kept if {
	m := log.mask with input as event(request)
	not "/input/parsed_body/plan" in m
}

test_body_without_personal_fields_kept if {
	# object.union merges objects deeply, so the body is swapped with json.patch.
	m := log.mask with input as event(json.patch(request, [{"op": "replace", "path": "/parsed_body", "value": {"plan": "pro"}}]))
	not "/input/attributes/request/http/body" in m
	count({p | some p in m; startswith(p, "/input/parsed_body/")}) == 0
}

test_non_object_body_is_fine if {
	m := log.mask with input as event(object.union(request, {"parsed_body": null}))
	not "/input/attributes/request/http/body" in m
}

test_secret_query_parameter_masks_path if {
	m := log.mask with input as event(object.union(request, {"parsed_query": {"access_token": ["abc"], "page": ["2"]}}))
	"/input/parsed_query/access_token" in m
	not "/input/parsed_query/page" in m
	"/input/attributes/request/http/path" in m
	"/input/attributes/request/http/headers/:path" in m
}

test_plain_query_keeps_path if {
	m := log.mask with input as event(object.union(request, {"parsed_query": {"page": ["2"]}}))
	not "/input/attributes/request/http/path" in m
}

test_pointer_escaping if {
	log.escape("a/b~c") == "a~1b~0c"
}

test_static_mask_covers_sidecar_defaults if {
	# regent-sidecar's default decision_logs.mask; static_mask must keep erasing them.
	defaults := {
		"/input/attributes/request/http/headers/authorization",
		"/input/attributes/request/http/headers/cookie",
		"/input/attributes/request/http/headers/proxy-authorization",
	}
	every p in defaults {
		p in log.static_mask
	}
}
