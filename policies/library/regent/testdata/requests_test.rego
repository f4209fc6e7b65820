# Test helpers: Envoy-shaped inputs as regent-sidecar builds them (see docs/input-and-decisions.md).
package regent.testdata

# 2026-01-01T00:00:00Z: the library's test tokens are valid from T0-60 to T0+3600.
t0 := 1767225600

# An HTTP request at T0 with the given headers (lower-case names, as Envoy sends them).
http(method, path, headers) := {
	"attributes": {
		"source": {"address": {"socketAddress": {"address": "10.0.0.5", "portValue": 51234}}},
		"request": {
			"time": {"seconds": t0},
			"http": {"method": method, "path": path, "headers": headers},
		},
	},
	"parsed_path": split(trim_prefix(split(path, "?")[0], "/"), "/"),
	"parsed_query": {},
}

# The same with a bearer token.
bearer(method, path, token) := http(method, path, {"authorization": concat(" ", ["Bearer", token])})

# Evaluation time moved by `seconds` from T0.
at(req, seconds) := object.union(req, {"attributes": {"request": {"time": {"seconds": t0 + seconds}}}})
