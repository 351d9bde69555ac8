"""The demo page (examples/demo.html) in Debian's Chromium: sentri's cookie flows as a
real browser runs them."""

import time
import uuid

from playwright.sync_api import expect

from conftest import ACCESS_TTL_SECS, totp

PASSWORD = "correct horse battery"


def ident():
    return f"b-{uuid.uuid4().hex[:12]}@example.com"


def cookies(context):
    return {c["name"]: c for c in context.cookies()}


def open_demo(context, server):
    page = context.new_page()
    page.goto(server.url + "/demo")
    return page


def sign_up_and_in(page, who):
    expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    page.fill("#register-identifier", who)
    page.fill("#register-password", PASSWORD)
    page.click("#register")
    expect(page.locator("#log")).to_contain_text("register: 201")
    page.fill("#login-identifier", who)
    page.fill("#login-password", PASSWORD)
    page.click("#login")
    expect(page.locator("#status")).to_have_text(f"Signed in as {who}")


def wait_access_cookie_gone(context):
    """The access cookie lives ACCESS_TTL_SECS (Max-Age): wait no longer than that."""
    deadline = time.time() + ACCESS_TTL_SECS + 60  # only so that a bug cannot hang CI
    while "access_token" in cookies(context):
        assert time.time() < deadline, "the access cookie outlived its Max-Age"
        time.sleep(0.1)


def test_register_login_me_and_sessions(context, server):
    page = open_demo(context, server)
    who = ident()
    sign_up_and_in(page, who)
    expect(page.locator("#me")).to_contain_text(who)
    expect(page.locator("#sessions tr")).to_have_count(1)
    expect(page.locator("#sessions")).to_contain_text("(this one)")


def test_cookie_flags_and_the_refresh_cookie_is_not_readable_from_javascript(context, server):
    page = open_demo(context, server)
    sign_up_and_in(page, ident())
    c = cookies(context)
    refresh, access = c["refresh_token"], c["access_token"]
    assert (refresh["httpOnly"], refresh["secure"], refresh["sameSite"], refresh["path"]) == (
        True, True, "Strict", "/"), refresh
    assert (access["httpOnly"], access["secure"], access["sameSite"], access["path"]) == (
        False, True, "Strict", "/"), access
    assert 0 < access["expires"] - time.time() <= ACCESS_TTL_SECS + 1, access
    assert refresh["expires"] - time.time() > 3600, refresh
    readable = page.evaluate("document.cookie")
    assert "refresh_token" not in readable, readable
    assert f"access_token={access['value']}" in readable, readable


def test_a_reload_keeps_the_user_signed_in(context, server):
    page = open_demo(context, server)
    who = ident()
    sign_up_and_in(page, who)
    page.reload()
    expect(page.locator("#status")).to_have_text(f"Signed in as {who}")
    expect(page.locator("#me")).to_contain_text(who)


def test_an_expired_access_token_is_refreshed_silently(context, server):
    page = open_demo(context, server)
    who = ident()
    sign_up_and_in(page, who)
    before = cookies(context)["refresh_token"]["value"]
    wait_access_cookie_gone(context)
    page.click("#whoami")
    expect(page.locator("#log")).to_contain_text("me: ok")
    expect(page.locator("#status")).to_have_text(f"Signed in as {who}")
    after = cookies(context)
    assert "access_token" in after, "a new access cookie was set"
    assert after["refresh_token"]["value"] != before, "the refresh token rotated"


def test_two_tabs_refreshing_at_once_both_stay_signed_in(context, server):
    first = open_demo(context, server)
    who = ident()
    sign_up_and_in(first, who)
    second = open_demo(context, server)
    expect(second.locator("#status")).to_have_text(f"Signed in as {who}")
    wait_access_cookie_gone(context)
    # Both requests leave before either answer arrives: one rotates, the other meets
    # the just-rotated token within the grace window.
    for page in (first, second):
        page.evaluate("window.__me = fetch('/auth/me', {credentials: 'same-origin'}).then(r => r.status)")
    assert [p.evaluate("window.__me") for p in (first, second)] == [200, 200]
    for page in (first, second):
        page.reload()
        expect(page.locator("#status")).to_have_text(f"Signed in as {who}")
    expect(second.locator("#sessions tr")).to_have_count(1)


def test_logout_clears_everything(context, server):
    page = open_demo(context, server)
    who = ident()
    sign_up_and_in(page, who)
    refresh = cookies(context)["refresh_token"]["value"]
    page.click("#logout")
    expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    assert not {"refresh_token", "access_token"} & cookies(context).keys(), cookies(context)
    assert page.evaluate("document.cookie") == ""
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    # The refresh token the browser held is dead on the server too.
    status, body, _ = server.call("POST", "/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"})
    assert (status, body["code"]) == (401, "TOKEN_INVALID"), body


def test_another_origin_cannot_use_the_cookies(context, server, other_origin):
    page = open_demo(context, server)
    who = ident()
    sign_up_and_in(page, who)
    evil = context.new_page()
    evil.goto(f"{other_origin}/evil.html?target={server.url}")
    result = evil.evaluate("window.attack()")
    assert result == {"read": "blocked"}, result
    # Neither the fetch POSTs nor the form POST ended the session or rotated its token.
    page.reload()
    expect(page.locator("#status")).to_have_text(f"Signed in as {who}")
    expect(page.locator("#sessions tr")).to_have_count(1)
    # The same form POST from the demo's own origin does work (the check is the origin).
    status = page.evaluate("fetch('/auth/logout-all', {method: 'POST'}).then(r => r.status)")
    assert status == 200


def test_login_with_a_second_factor(context, server):
    who = ident()
    assert server.call("POST", "/auth/register", {"identifier": who, "password": PASSWORD})[0] == 201
    status, body, _ = server.call("POST", "/auth/login", {"identifier": who, "password": PASSWORD})
    assert status == 200, body
    bearer = {"Authorization": "Bearer " + body["data"]["accessToken"]}
    status, body, _ = server.call("POST", "/auth/2fa/totp/enroll", {"password": PASSWORD}, bearer)
    assert status == 201, body
    device, secret = body["data"]["deviceId"], body["data"]["secret"]
    status, body, _ = server.call("POST", "/auth/2fa/totp/confirm",
                                  {"deviceId": device, "code": totp(secret)}, bearer)
    assert status == 200, body
    backup = body["data"]["backupCodes"][0]

    page = open_demo(context, server)
    expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    page.fill("#login-identifier", who)
    page.fill("#login-password", PASSWORD)
    page.click("#login")
    expect(page.locator("#two-factor-form")).to_be_visible()
    assert "refresh_token" not in cookies(context), "no session before the second factor"
    page.fill("#two-factor-code", backup)
    page.click("#two-factor-verify")
    expect(page.locator("#status")).to_have_text(f"Signed in as {who}")
    assert "refresh_token" in cookies(context)
