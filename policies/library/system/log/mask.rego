# Decision-log masking, in OPA's `system.log.mask` convention: `mask` is a set of JSON pointers into
# the decision event (`input` here is the event: input.input is the request's input document) that
# are erased before the event is written.
#
# What goes: credentials (Authorization, cookies, API keys, the verified JWT claims Envoy's
# jwt_authn filter forwards), the client IP (personal data under GDPR), personal fields of a JSON or
# form body (and then the raw body too, which repeats them), and secrets in the query string
# (then the whole path, which repeats the query).
#
# regent-sidecar evaluates this rule on every decision log event, as OPA does, and also erases the
# JSON pointers of its `decision_logs.mask` setting. `static_mask` below is the
# request-independent part of `mask`, for setups that prefer a static list.
package system.log

static_mask := sort(data.system.log.always)

mask contains pointer if {
	some pointer in data.system.log.always
}

mask contains sprintf("/input/parsed_body/%s", [escape(field)]) if {
	some field in personal_fields
}

mask contains "/input/attributes/request/http/body" if count(personal_fields) > 0

mask contains "/input/attributes/request/http/rawBody" if count(personal_fields) > 0

mask contains sprintf("/input/parsed_query/%s", [escape(name)]) if {
	some name in secret_parameters
}

mask contains "/input/attributes/request/http/path" if count(secret_parameters) > 0

mask contains "/input/attributes/request/http/headers/:path" if count(secret_parameters) > 0

personal_fields contains field if {
	some field in data.system.log.personal_body_fields
	_ = input.input.parsed_body[field]
}

secret_parameters contains name if {
	some name in data.system.log.secret_query_parameters
	_ = input.input.parsed_query[name]
}

# RFC 6901: "~" and "/" inside a reference token are written "~0" and "~1".
escape(s) := replace(replace(s, "~", "~0"), "/", "~1")
