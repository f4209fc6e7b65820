//! End-to-end harness: starts git, `regent serve`, `regent-sidecar`, Envoy and upstreams on loopback.
