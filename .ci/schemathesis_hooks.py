"""Schemathesis hooks for sentri's API fuzzing (.ci/api_fuzz.sh).

Every request carries the access token of a fresh admin login, so the fuzzer reaches
the guarded and admin routes (a fixed token would die as soon as a generated request
ends its session or changes the admin's roles).
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["SENTRI_FUZZ_BASE"]
ADMIN = {
    "identifier": os.environ["SENTRI_ADMIN_IDENTIFIER"],
    "password": os.environ["SENTRI_ADMIN_PASSWORD"],
}


@schemathesis.auth(refresh_interval=1)
class AdminLogin:
    def get(self, case, context):
        req = urllib.request.Request(
            f"{BASE}/login",
            data=json.dumps(ADMIN).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.load(res)["data"]["accessToken"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
