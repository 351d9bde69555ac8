"""A local SMTP server for sentri's tests: aiosmtpd delivering into a Maildir.

    python .ci/smtp_server.py --port 2525 --maildir /tmp/sentri-mail [--auth user:pass]

With --auth the server requires AUTH (PLAIN/LOGIN, accepted without TLS: a test server
on loopback only) and refuses any other credentials with 535. It never offers STARTTLS.
"""
import argparse
import os
import signal
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def authenticator(expected):
    user, password = expected.encode().split(b":", 1)

    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (user, password)
        return AuthResult(success=ok, handled=False)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--auth", default=None)
    args = parser.parse_args()
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(args.maildir, sub), exist_ok=True)
    kwargs = {}
    if args.auth:
        kwargs = dict(authenticator=authenticator(args.auth), auth_required=True, auth_require_tls=False)
    controller = Controller(Mailbox(args.maildir), hostname=args.host, port=args.port, **kwargs)
    controller.start()
    print(f"smtp listening on {args.host}:{args.port}, maildir {args.maildir}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
