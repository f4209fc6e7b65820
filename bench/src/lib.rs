//! Benchmark tooling: load generators and a NOP ext_authz server used as the throughput floor.
