//! Regent's bundle library: the OPA-compatible bundle format shared by the sidecar and the bundle server.
