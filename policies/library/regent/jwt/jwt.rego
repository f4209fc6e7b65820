# Bearer-token verification shared by the library's policies.
#
# A token is accepted only when all of these hold:
# - its header `alg` is one of data.regent.jwt.algorithms (pinned: `none`, HS* and anything not
#   listed are refused before any key is tried, so a public key can never be used as an HMAC secret);
# - the signature verifies against the JWKS in data.regent.jwt.jwks (bundle data, so key rotation is
#   a commit);
# - `iss` and `aud` match data.regent.jwt.issuer / audience;
# - `exp` is present, and `exp`/`nbf` hold at the evaluation time with clock_skew_seconds of slack.
#
# The evaluation time is the request time Envoy put in the input (so a decision can be replayed and
# tests pin it), or the sidecar's clock when the input has none.
package regent.jwt

# Nanoseconds since the epoch at which the request is judged.
now_ns := (input.attributes.request.time.seconds * 1000000000) + object.get(input.attributes.request.time, "nanos", 0) if {
	is_number(input.attributes.request.time.seconds)
} else := time.now_ns()

# The bearer token of the Authorization header ("Bearer" is case-insensitive, as RFC 6750 says).
token := t if {
	auth := input.attributes.request.http.headers.authorization
	parts := split(trim_space(auth), " ")
	count(parts) == 2
	lower(parts[0]) == "bearer"
	t := parts[1]
	t != ""
}

# Header and payload before verification: only used to pick the pinned algorithm and to place the
# clock-skew window, never trusted on their own.
unverified := [header, payload] if {
	[header, payload, _] := io.jwt.decode(token)
}

# The token's claims, defined only when every check above passes.
claims := payload if {
	[header, unchecked] := unverified
	header.alg in data.regent.jwt.algorithms
	is_number(unchecked.exp)
	[true, _, payload] := io.jwt.decode_verify(token, {
		"cert": json.marshal(data.regent.jwt.jwks),
		"alg": header.alg,
		"iss": data.regent.jwt.issuer,
		"aud": data.regent.jwt.audience,
		# A float on purpose: regent-sidecar's decode_verify refuses integer times beyond 2^53
		# (any time in ns), so `* 1.0`; f64 steps of 256 ns at today's epoch do not matter here.
		"time": check_time_ns(unchecked) * 1.0,
	})
}

valid if claims

# io.jwt.decode_verify takes one time and has no skew. To allow `clock_skew_seconds` on both
# bounds, a `now` that misses the token's [nbf, exp) window by no more than the skew is moved just
# inside it; any other `now` is passed unchanged (and the token then fails on its own merits).
# Comparisons happen in seconds first, so an absurd `exp` never reaches a multiplication.
check_time_ns(p) := t if {
	is_number(p.nbf)
	now_s := now_ns / 1000000000
	now_s < p.nbf
	p.nbf - now_s <= data.regent.jwt.clock_skew_seconds
	t := p.nbf * 1000000000
} else := t if {
	now_s := now_ns / 1000000000
	now_s >= p.exp
	now_s - p.exp < data.regent.jwt.clock_skew_seconds
	t := (p.exp * 1000000000) - 1000000
} else := now_ns

# Scopes granted by the token: OAuth `scope` (space separated) and/or `scp` (array).
scopes contains s if {
	some s in split(claims.scope, " ")
	s != ""
}

scopes contains s if {
	some s in claims.scp
	is_string(s)
}

# Why a request has no valid token, for the 401 body: "missing_token" or "invalid_token".
failure := "missing_token" if {
	not token
} else := "invalid_token" if {
	not valid
}
