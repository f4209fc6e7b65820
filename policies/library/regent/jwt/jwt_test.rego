package regent.jwt_test

import data.regent.jwt
import data.regent.testdata.bearer
import data.regent.testdata.at
import data.regent.testdata.http
import data.regent.testdata.tokens

get(token) := bearer("GET", "/api/orders", token)

test_valid_rs256_token if {
	c := jwt.claims with input as get(tokens.alice)
	c.sub == "alice"
	c.tenant == "acme"
}

test_valid_es256_token if {
	c := jwt.claims with input as get(tokens.alice_es256)
	c.sub == "alice"
}

test_scopes_from_scope_claim if {
	s := jwt.scopes with input as get(tokens.alice)
	s == {"orders:read", "orders:write"}
}

test_scopes_from_scp_array if {
	s := jwt.scopes with input as get(tokens.reporting_scp)
	s == {"orders:read", "reports:read"}
}

test_one_of_several_audiences if jwt.valid with input as get(tokens.alice_multi_aud)

test_bearer_scheme_is_case_insensitive if {
	jwt.valid with input as http("GET", "/", {"authorization": concat(" ", ["bearer", tokens.alice])})
}

test_missing_header_is_missing_token if {
	f := jwt.failure with input as http("GET", "/", {})
	f == "missing_token"
}

test_other_scheme_is_missing_token if {
	f := jwt.failure with input as http("GET", "/", {"authorization": "Basic YWxpY2U6c2VjcmV0"})
	f == "missing_token"
}

test_empty_bearer_is_missing_token if {
	f := jwt.failure with input as http("GET", "/", {"authorization": "Bearer "})
	f == "missing_token"
}

test_garbage_token_is_invalid if {
	f := jwt.failure with input as get("not.a.jwt")
	f == "invalid_token"
}

test_valid_token_has_no_failure if not jwt.failure with input as get(tokens.alice)

test_expired_refused if not jwt.valid with input as get(tokens.expired)

test_expired_within_clock_skew_accepted if jwt.valid with input as get(tokens.expired_within_skew)

test_expired_within_skew_refused_once_skew_passed if {
	# exp is T0-10; 30 s of skew end at T0+20.
	jwt.valid with input as at(get(tokens.expired_within_skew), 19)
	not jwt.valid with input as at(get(tokens.expired_within_skew), 20)
}

test_valid_token_refused_after_exp_plus_skew if {
	# exp is T0+3600.
	jwt.valid with input as at(get(tokens.alice), 3600)
	not jwt.valid with input as at(get(tokens.alice), 3630)
}

test_not_yet_valid_refused if not jwt.valid with input as get(tokens.not_yet_valid)

test_nbf_within_clock_skew_accepted if jwt.valid with input as get(tokens.nbf_within_skew)

test_nbf_skew_bound if {
	# nbf is T0+600: accepted from T0+570 on.
	not jwt.valid with input as at(get(tokens.not_yet_valid), 569)
	jwt.valid with input as at(get(tokens.not_yet_valid), 570)
}

test_token_without_exp_refused if not jwt.valid with input as get(tokens.no_exp)

test_wrong_audience_refused if not jwt.valid with input as get(tokens.wrong_aud)

test_wrong_issuer_refused if not jwt.valid with input as get(tokens.wrong_iss)

test_alg_none_refused if not jwt.valid with input as get(tokens.alg_none)

test_wrong_key_refused if not jwt.valid with input as get(tokens.wrong_key)

test_unpinned_algorithm_refused if not jwt.valid with input as get(tokens.unexpected_alg_rs384)

test_hmac_with_public_key_refused if not jwt.valid with input as get(tokens.hs256_with_public_key)

test_tampered_payload_refused if not jwt.valid with input as get(tokens.tampered_scope)

test_pinning_is_enforced_by_policy if {
	# The same ES256 token is refused once ES256 is no longer pinned.
	not jwt.valid with input as get(tokens.alice_es256) with data.regent.jwt.algorithms as ["RS256"]
}

test_rotated_out_key_refused if {
	not jwt.valid with input as get(tokens.alice) with data.regent.jwt.jwks as {"keys": []}
}

test_clock_falls_back_to_now_without_request_time if {
	# Without a request time the sidecar's clock (years after the fixtures' T0) is used.
	req := json.remove(get(tokens.alice), ["attributes/request/time"])
	not jwt.valid with input as req
}
