"""A Flask app that says who the user is once per request, with ``dreamdata_logging.bind()``.

Run it (``pip install "dreamdata-logging[flask]"``), with a local collector in another terminal::

    dreamdata-logging collector --port 8765
    DREAMDATA_WRITE_KEY=dev DREAMDATA_ENDPOINT=http://127.0.0.1:8765 python examples/flask_app.py

    curl -c jar -b jar http://127.0.0.1:5000/pricing
    curl -c jar -b jar -d email=jake@yahoo.com -d plan=pro http://127.0.0.1:5000/signup
    curl -c jar -b jar -X POST http://127.0.0.1:5000/upgrade

``before_request`` binds the visitor's ``anonymousId`` (a cookie) and, once signed up, the ``userId``
(from the session), plus request context (ip, user agent, page URL). The views then log events
without repeating any of it; ``teardown_request`` undoes the bind when the request ends.
"""

from __future__ import annotations

import logging
import uuid
from typing import Optional

from flask import Flask, Response, g, request, session

import dreamdata_logging
from dreamdata_logging import DreamdataHandler, identify, page, track

log = logging.getLogger("analytics")
ANONYMOUS_COOKIE = "dd_anonymous_id"


def create_app(handler: Optional[logging.Handler] = None, secret_key: str = "change-me") -> Flask:
    """The app; events go to ``handler`` (by default a DreamdataHandler configured from the environment)."""
    app = Flask(__name__)
    app.secret_key = secret_key
    log.addHandler(handler if handler is not None else DreamdataHandler())
    log.setLevel(logging.INFO)

    @app.before_request
    def bind_visitor() -> None:
        g.new_anonymous_id = None
        anonymous_id = request.cookies.get(ANONYMOUS_COOKIE)
        if not anonymous_id:
            anonymous_id = g.new_anonymous_id = str(uuid.uuid4())
        binding = dreamdata_logging.bind(
            user_id=session.get("user_id"),  # None (not bound) until the visitor signs up
            anonymous_id=anonymous_id,
            context={
                "ip": request.remote_addr,
                "userAgent": request.headers.get("User-Agent", ""),
                "page": {"url": request.url, "path": request.path, "referrer": request.referrer or ""},
            },
        )
        binding.__enter__()
        g.dreamdata_binding = binding

    @app.after_request
    def remember_visitor(response: Response) -> Response:
        if g.get("new_anonymous_id"):
            response.set_cookie(ANONYMOUS_COOKIE, g.new_anonymous_id, httponly=True, samesite="Lax")
        return response

    @app.teardown_request
    def unbind_visitor(error: Optional[BaseException]) -> None:
        binding = g.pop("dreamdata_binding", None)
        if binding is not None:
            binding.__exit__(None, None, None)

    @app.get("/pricing")
    def pricing() -> str:
        log.info("page", extra=page("Pricing", category="Marketing"))  # ids and context come from bind
        return "Pricing\n"

    @app.post("/signup")
    def signup() -> tuple[str, int]:
        user_id = "u-" + uuid.uuid4().hex[:12]
        session["user_id"] = user_id
        plan = request.form.get("plan", "free")
        # This request was bound before the visitor had a user id: give it here; the bound
        # anonymousId rides along, which links the visitor's earlier pages to the new user.
        log.info("identify", extra=identify(user_id=user_id, traits={"email": request.form.get("email"), "plan": plan}))
        log.info("Signed Up", extra=track(user_id=user_id, properties={"plan": plan}))
        return f"Welcome {user_id}\n", 201

    @app.post("/upgrade")
    def upgrade() -> str:
        if "user_id" not in session:
            return "sign up first\n"
        log.info("Plan Upgraded", extra=track(properties={"plan": "enterprise"}))  # userId from bind
        return "Upgraded\n"

    return app


if __name__ == "__main__":
    create_app().run(port=5000)
