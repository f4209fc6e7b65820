package regent.paths_test

import data.regent.paths

test_exact_match if paths.match("/api/orders", ["api", "orders"])

test_exact_mismatch if not paths.match("/api/orders", ["api", "invoices"])

test_exact_needs_same_length if {
	not paths.match("/api/orders", ["api", "orders", "1"])
	not paths.match("/api/orders", ["api"])
}

test_star_is_one_segment if {
	paths.match("/api/orders/*", ["api", "orders", "o-1"])
	not paths.match("/api/orders/*", ["api", "orders"])
	not paths.match("/api/orders/*", ["api", "orders", "o-1", "items"])
}

test_star_needs_non_empty_segment if not paths.match("/api/orders/*", ["api", "orders", ""])

test_star_in_the_middle if {
	paths.match("/api/orders/*/refunds", ["api", "orders", "o-1", "refunds"])
	not paths.match("/api/orders/*/refunds", ["api", "orders", "o-1", "items"])
}

test_globstar_matches_prefix_and_below if {
	paths.match("/public/**", ["public"])
	paths.match("/public/**", ["public", "a"])
	paths.match("/public/**", ["public", "a", "b", "c"])
	not paths.match("/public/**", ["private", "a"])
	not paths.match("/public/**", ["publicity"])
}

test_segments_cut_query_and_leading_slash if {
	paths.segments("/api/orders?limit=5") == ["api", "orders"]
	paths.segments("/") == [""]
	paths.segments("/a/") == ["a", ""]
}

test_root_pattern if {
	paths.match("/", [""])
	not paths.match("/", ["a"])
}

test_star_refuses_dot_segments_and_encoded_slashes if {
	not paths.match("/api/orders/*", ["api", "orders", ".."])
	not paths.match("/api/orders/*", ["api", "orders", "."])
	not paths.match("/api/orders/*", ["api", "orders", "../admin"])
	not paths.match("/public/**", ["public", "../admin"])
	not paths.match("/public/**", ["public", "a", ".."])
}
