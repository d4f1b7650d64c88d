#!/usr/bin/env python3
"""Run idsync's webhook mappings the way Authentik 2026.2's worker runs them.

Standard library only. Used by crates/idsync-server/tests/api/blueprints.rs, which takes
the mappings out of authentik/blueprints/idsync-sync.yaml and sends this program, on
stdin, one JSON document:

    {"mappings": {"body": M, "headers": M}, "env": {NAME: VALUE, ...}, "cases": [CASE, ...]}

M is {"name": <the mapping's name>, "expression": E}. E is the blueprint's `expression`
value: a string, or a YAML tag as {"$tag": "!Format" | "!Env", "value": ...}, which is
resolved here as Authentik's blueprint loader resolves it, with `env` as the environment.
A CASE is {"name", "event": {"pk", "action", "app", "context", "created", "user"},
"recipient": {"pk", "username", "email", "name"}, "body": <notification text or null>}.

For each case it prints, as one JSON document on stdout,
{"name", "body": <the request body, text>, "headers": {...}} or {"name", "error": "..."}:
the body is what `requests.post(url, json=...)` sends after Authentik's sanitiser, the
headers what the headers mapping adds.

What Authentik does (authentik/events/models.py NotificationTransport.send_webhook,
authentik/core/expression/evaluator.py PropertyMappingEvaluator,
authentik/lib/expression/evaluator.py BaseEvaluator) and what this mirrors:
- each mapping is evaluated with the context variables `user` (the notified user),
  `request` (a PolicyRequest without an HTTP request) and `notification` (its `.event`
  is the audit event), in that order;
- the expression becomes the body of `def handler(user, request, notification):`, which
  is compiled and exec'd with Authentik's expression globals, and its return value is the
  result;
- the result goes through `sanitize_item` (UUID objects lose their dashes, datetimes
  become ISO 8601 with "Z", falsy list items are dropped), then `json.dumps`.
Globals that would reach Authentik's database or the network are stand-ins that raise:
the mappings must not need them.
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
import json
import re
import sys
import textwrap
import unicodedata
import uuid
from typing import Any

# --- Blueprint tags -------------------------------------------------------------------


def resolve_tags(value: Any, env: dict[str, str]) -> Any:
    """The two tags the mappings may use, resolved as authentik/blueprints/v1/common.py does."""
    if isinstance(value, list):
        return [resolve_tags(v, env) for v in value]
    if isinstance(value, dict) and "$tag" in value:
        tag, arg = value["$tag"], value["value"]
        if tag == "!Env":
            # Env.resolve: getenv(key) or default
            if isinstance(arg, list):
                key, default = arg[0], resolve_tags(arg[1], env)
            else:
                key, default = arg, None
            return env.get(key) or default
        if tag == "!Format":
            # Format.resolve: format_string % tuple(args)
            template = arg[0]
            args = tuple(resolve_tags(a, env) for a in arg[1:])
            return template % args
        raise ValueError(f"tag {tag} is not expected in a webhook mapping")
    if isinstance(value, dict):
        return {k: resolve_tags(v, env) for k, v in value.items()}
    return value


# --- Stand-ins for Authentik's objects --------------------------------------------------


class StandInUser:
    """authentik.core.models.User, the attributes a mapping could read without the DB."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.pk = data["pk"]
        self.id = data["pk"]
        self.username = data.get("username", "")
        self.email = data.get("email", "")
        self.name = data.get("name", "")
        self.uuid = uuid.UUID(data["uuid"]) if data.get("uuid") else uuid.uuid4()
        self.is_active = data.get("is_active", True)
        self.type = data.get("type", "internal")
        self.path = data.get("path", "users")
        self.attributes = data.get("attributes", {})

    def __str__(self) -> str:
        return self.username


class StandInEvent:
    """authentik.events.models.Event as stored: `user` and `context` are JSON dicts."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.pk = uuid.UUID(data["pk"])
        self.event_uuid = self.pk
        self.action = data["action"]
        self.app = data.get("app", "")
        self.context = data.get("context", {})
        self.user = data.get("user", {})
        self.client_ip = data.get("client_ip", "192.0.2.10")
        self.brand = data.get("brand", {})
        self.created = _dt.datetime.fromisoformat(data["created"].replace("Z", "+00:00"))
        self.expires = self.created + _dt.timedelta(days=365)

    @property
    def summary(self) -> str:
        if "message" in self.context:
            return self.context["message"]
        return f"{self.action}: {self.context}"

    @property
    def hyperlink(self) -> str | None:
        return self.context.get("hyperlink")

    @property
    def hyperlink_label(self) -> str | None:
        return self.context.get("hyperlink_label")


class StandInNotification:
    """authentik.events.models.Notification as notification_transport builds it."""

    def __init__(self, event: StandInEvent, user: StandInUser, body: str | None) -> None:
        self.uuid = uuid.uuid4()
        self.pk = self.uuid
        self.severity = "notice"
        self.body = body if body is not None else event.summary
        self.hyperlink = event.hyperlink
        self.hyperlink_label = event.hyperlink_label
        self.created = _dt.datetime.now(_dt.timezone.utc)
        self.event = event
        self.seen = False
        self.user = user


class StandInPolicyRequest:
    """authentik.policies.types.PolicyRequest as PropertyMappingEvaluator.set_context makes it."""

    def __init__(self, user: StandInUser, mapping: StandInMapping, notification: Any) -> None:
        self.user = user
        self.http_request = None
        self.obj = mapping
        self.context = {"notification": notification}
        self.debug = False


class StandInMapping:
    def __init__(self, name: str, expression: str) -> None:
        self.name = name
        self.expression = expression


class SkipObject(Exception):
    """authentik.core.expression.exceptions.SkipObjectException"""


class NotAvailable:
    """A global that needs Authentik's database or the network."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.name} is not available to idsync's webhook mappings' test")

    def __getattr__(self, attr: str) -> Any:
        raise RuntimeError(f"{self.name}.{attr} is not available to idsync's webhook mappings' test")


class Logger:
    def __getattr__(self, level: str) -> Any:
        return lambda *args, **kwargs: None


def slugify(value: Any, allow_unicode: bool = False) -> str:
    """django.utils.text.slugify"""
    value = str(value)
    if allow_unicode:
        value = unicodedata.normalize("NFKC", value)
    else:
        value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value.lower())
    return re.sub(r"[-\s]+", "-", value).strip("-_")


def sanitize_arg(name: str) -> str:
    """authentik.lib.expression.evaluator.sanitize_arg"""
    return re.sub(r"[:.-]", "_", slugify(name))


def expression_globals() -> dict[str, Any]:
    """BaseEvaluator._globals plus PropertyMappingEvaluator's SkipObject."""

    def list_flatten(value: Any) -> Any:
        if isinstance(value, list):
            return value[0] if value else None
        return value

    return {
        "ak_call_policy": NotAvailable("ak_call_policy"),
        "ak_create_event": NotAvailable("ak_create_event"),
        "ak_create_jwt": NotAvailable("ak_create_jwt"),
        "ak_create_jwt_raw": NotAvailable("ak_create_jwt_raw"),
        "ak_is_group_member": NotAvailable("ak_is_group_member"),
        "ak_logger": Logger(),
        "ak_send_email": NotAvailable("ak_send_email"),
        "ak_user_by": NotAvailable("ak_user_by"),
        "ak_user_has_authenticator": NotAvailable("ak_user_has_authenticator"),
        "ip_address": ipaddress.ip_address,
        "ip_network": ipaddress.ip_network,
        "list_flatten": list_flatten,
        "regex_match": lambda value, regex: re.search(regex, value) is not None,
        "regex_replace": lambda value, regex, repl: re.sub(regex, repl, value),
        "requests": NotAvailable("requests"),
        "resolve_dns": NotAvailable("resolve_dns"),
        "reverse_dns": NotAvailable("reverse_dns"),
        "slugify": slugify,
        "SkipObject": SkipObject,
    }


def evaluate(mapping: StandInMapping, context: dict[str, Any]) -> Any:
    """BaseEvaluator.wrap_expression + evaluate."""
    signature = ",".join(x for x in (sanitize_arg(k) for k in context) if x)
    source = f"def handler({signature}):\n"
    source += textwrap.indent(mapping.expression, "    ")
    source += f"\nresult = handler({signature})"
    code = compile(source, mapping.name, "exec")
    local_vars = {sanitize_arg(k): v for k, v in context.items()}
    exec(code, expression_globals(), local_vars)  # noqa: S102 - this is what Authentik does
    return local_vars["result"]


def sanitize_item(value: Any) -> Any:
    """authentik.events.utils.sanitize_item, for the types a mapping can return here."""
    if isinstance(value, dict):
        return {k: v for k, v in ((k, sanitize_item(v)) for k, v in value.items()) if v is not ...}
    if isinstance(value, (list, tuple, set)):
        return [v for v in (sanitize_item(i) for i in value) if v]
    if isinstance(value, StandInUser):
        return {"username": value.username, "pk": value.pk, "email": value.email}
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, _dt.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return str(value.total_seconds())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_case(mappings: dict[str, StandInMapping], case: dict[str, Any]) -> dict[str, Any]:
    event = StandInEvent(case["event"])
    recipient = StandInUser(case["recipient"])
    notification = StandInNotification(event, recipient, case.get("body"))
    out: dict[str, Any] = {"name": case["name"]}
    try:
        results = {}
        for part in ("body", "headers"):
            mapping = mappings[part]
            context = {
                "user": recipient,
                "request": StandInPolicyRequest(recipient, mapping, notification),
                "notification": notification,
            }
            results[part] = sanitize_item(evaluate(mapping, context))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    # requests: body = json.dumps(json, allow_nan=False)
    out["body"] = json.dumps(results["body"], allow_nan=False)
    headers = results["headers"]
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        out["error"] = f"the headers mapping must return a dict of strings, not {headers!r}"
        return out
    out["headers"] = headers
    return out


def main() -> int:
    document = json.load(sys.stdin)
    env = document.get("env", {})
    mappings = {}
    for part in ("body", "headers"):
        spec = document["mappings"][part]
        expression = resolve_tags(spec["expression"], env)
        if not isinstance(expression, str):
            raise SystemExit(f"the {part} mapping's expression is not a string: {expression!r}")
        mappings[part] = StandInMapping(spec["name"], expression)
    results = [run_case(mappings, case) for case in document["cases"]]
    json.dump({"results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
