#!/usr/bin/env python3
"""Regenerates envoy/authz/bindings/data.json, sample-inputs.json and checks/ of the RBAC bundle.

Deterministic (fixed seed): `python3 policies/rbac/gen_data.py` from the repository root gives the
same files. 200 users in 20 tenants bound to the 9 roles of envoy/authz/data.json.
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20260101)

TENANTS = [f"tenant-{i:02d}" for i in range(20)]
TENANT_ROLES = ["tenant_admin", "order_manager", "order_viewer", "billing_admin",
                "billing_viewer", "support_agent"]

bindings = {}
for i in range(200):
    user = f"user-{i:03d}"
    home = TENANTS[i % 20]
    b = {"tenants": {home: sorted(rng.sample(TENANT_ROLES, rng.choice([1, 1, 2, 3])))}}
    if rng.random() < 0.1:
        other = rng.choice([t for t in TENANTS if t != home])
        b["tenants"][other] = [rng.choice(["order_viewer", "billing_viewer", "support_agent"])]
    if i < 2:
        b["global"] = ["platform_admin"]
    elif i < 5:
        b["global"] = ["auditor"]
    elif i < 7:
        b["global"] = ["catalog_editor"]
    bindings[user] = b

# Users the tests and sample inputs rely on, pinned whatever the generator draws.
bindings.update({
    "user-000": {"global": ["platform_admin"], "tenants": {"tenant-00": ["tenant_admin"]}},
    "user-003": {"global": ["auditor"], "tenants": {"tenant-03": ["order_viewer"]}},
    "user-005": {"global": ["catalog_editor"], "tenants": {"tenant-05": ["order_viewer"]}},
    "user-010": {"tenants": {"tenant-10": ["order_viewer"]}},
    "user-011": {"tenants": {"tenant-11": ["billing_viewer"]}},
    "user-012": {"tenants": {"tenant-12": ["order_manager"]}},
    "user-013": {"tenants": {"tenant-13": ["support_agent"], "tenant-14": ["order_viewer"]}},
    "user-015": {"tenants": {"tenant-15": ["tenant_admin"]}},
    "user-016": {"tenants": {"tenant-16": ["billing_admin"]}},
})

os.makedirs(os.path.join(HERE, "envoy/authz/bindings"), exist_ok=True)
with open(os.path.join(HERE, "envoy/authz/bindings/data.json"), "w") as f:
    json.dump(bindings, f, indent=1, sort_keys=True)
    f.write("\n")


def request(method, path, subject):
    return {
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "10.0.0.5", "portValue": 51234}}},
            "request": {"http": {"method": method, "path": path, "host": "api.regent.example",
                                 "headers": {":authority": "api.regent.example", ":method": method,
                                             ":path": path, "user-agent": "bench/1.0",
                                             "x-request-id": "5b1f1c1e-3a39-4b1b-9c1e-2f1a2b3c4d5e"}}},
            "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {
                "verified_jwt": {"sub": subject, "iss": "https://id.regent.example",
                                 "aud": "api.regent.example", "exp": 4102444800}}}},
        },
        "parsed_path": path.split("?")[0].lstrip("/").split("/"),
        "parsed_query": {},
    }


# A mix for benchmarks: tenant reads and writes (allowed and denied), cross-tenant, global, health.
samples = {
    "tenant_read_allowed": request("GET", "/api/v1/tenants/tenant-10/orders/o-123", "user-010"),
    "tenant_write_denied": request("DELETE", "/api/v1/tenants/tenant-10/orders/o-123", "user-010"),
    "cross_tenant_denied": request("GET", "/api/v1/tenants/tenant-03/orders", "user-010"),
    "platform_admin": request("PUT", "/api/v1/tenants/tenant-11/users/u-1", "user-000"),
    "global_catalog": request("POST", "/api/v1/catalog/items", "user-005"),
    "health": request("GET", "/healthz", "anonymous"),
}
with open(os.path.join(HERE, "sample-inputs.json"), "w") as f:
    json.dump(samples, f, indent=1, sort_keys=True)
    f.write("\n")


def check_request(method, path, subject):
    """An Envoy CheckRequest (proto3 JSON) for `regent check`, run by policies/test.sh."""
    return {"attributes": {
        "request": {"http": {"method": method, "path": path, "headers": {":path": path, ":method": method}}},
        "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"verified_jwt": {"sub": subject}}}},
    }}


checks = {
    "tenant_read.allowed": check_request("GET", "/api/v1/tenants/tenant-10/orders/o-1", "user-010"),
    "tenant_write.denied": check_request("DELETE", "/api/v1/tenants/tenant-10/orders/o-1", "user-010"),
    "cross_tenant.denied": check_request("GET", "/api/v1/tenants/tenant-03/orders", "user-010"),
    "platform_admin.allowed": check_request("PUT", "/api/v1/tenants/tenant-11/users/u-1", "user-000"),
}
out = os.path.join(HERE, "checks/envoy.authz.allow")
os.makedirs(out, exist_ok=True)
for name, req in checks.items():
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(req, f, indent=1, sort_keys=True)
        f.write("\n")
