"""A real SMTP server for the email sink's test: aiosmtpd with STARTTLS required
and AUTH (login "healer", password "s3cr3t-smtp-pass"). Prints READY, then one JSON
line per mail received; stops when stdin closes.

usage: smtp_server.py PORT CERT KEY
"""
import json
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "auth": bool(session.authenticated),
        }), flush=True)
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"healer" and auth_data.password == b"s3cr3t-smtp-pass"
    return AuthResult(success=ok)


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    print("READY", flush=True)
    sys.stdin.read()
    controller.stop()


main()
