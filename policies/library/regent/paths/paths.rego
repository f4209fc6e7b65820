# Path matching without glob.match: patterns are split on "/" and compared segment by segment,
# which costs a few lookups instead of a regex compile per call (~15µs each in regorus).
#
# Pattern syntax: "/api/orders/*" ("*" = exactly one segment), "/api/orders/**" ("**" as the
# last segment = that prefix followed by any number of segments, including none).
package regent.paths

# Segments of a request path: the query is cut off, the leading "/" dropped. Prefer
# input.parsed_path when matching the request itself (it is percent-decoded per segment, so an
# encoded "%2F" cannot forge a segment boundary).
segments(path) := split(trim_prefix(split(path, "?")[0], "/"), "/")

# True when the path segments `segs` match `pattern` (a string, see above).
match(pattern, segs) if {
	pat := segments(pattern)
	not ends_with_globstar(pat)
	count(pat) == count(segs)
	every i, p in pat {
		segment_ok(p, segs[i])
	}
}

match(pattern, segs) if {
	pat := segments(pattern)
	ends_with_globstar(pat)
	prefix := array.slice(pat, 0, count(pat) - 1)
	count(segs) >= count(prefix)
	every i, p in prefix {
		segment_ok(p, segs[i])
	}
	every s in array.slice(segs, count(prefix), count(segs)) {
		safe(s)
	}
}

ends_with_globstar(pat) if pat[count(pat) - 1] == "**"

# Wildcards never match a "." or ".." segment, nor one holding a "/" (a decoded "%2F"), and "*"
# never matches an empty one: an upstream that normalises or re-decodes the path could otherwise
# see a different route than the one authorized.
segment_ok("*", s) if {
	s != ""
	safe(s)
}

safe(s) if {
	s != "."
	s != ".."
	not contains(s, "/")
}

segment_ok(p, s) if {
	p != "*"
	p == s
}
