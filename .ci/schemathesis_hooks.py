"""Schemathesis hooks for sentri's API fuzzing (.ci/api_fuzz.sh).

Every request carries the credentials of a fresh admin login, so the fuzzer reaches
the guarded and admin routes (a fixed token would die as soon as a generated request
ends its session or changes the admin's roles): the access token as a bearer header, or
with SENTRI_FUZZ_TRANSPORT=cookie the session cookies, as a browser sends them.
"""

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["SENTRI_FUZZ_BASE"]
COOKIES = os.environ.get("SENTRI_FUZZ_TRANSPORT") == "cookie"
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
            if COOKIES:
                return "; ".join(c.split(";")[0] for c in res.headers.get_all("Set-Cookie"))
            return json.load(res)["data"]["accessToken"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        if COOKIES:
            case.headers["Cookie"] = data
        else:
            case.headers["Authorization"] = f"Bearer {data}"
