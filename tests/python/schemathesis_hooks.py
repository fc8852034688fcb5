"""Keeps schemathesis's generated requests from sending Easel anywhere but `.invalid` hosts: every
http(s) URL in a body (callbacks, reference images, masks) has its host replaced before the
request is sent, so the server's fetches and callbacks fail at name resolution. And keeps the
server's one channel on: a generated `{"enabled": false}` would leave every later task waiting
(and the OpenAI routes answering 504), so the switch is only ever sent on."""

import re

import schemathesis

HOST = re.compile(r"^(\s*https?://)[^/?#]*", re.IGNORECASE)


def confine(value):
    if isinstance(value, str):
        return HOST.sub(r"\1schemathesis.invalid", value)
    if isinstance(value, list):
        return [confine(v) for v in value]
    if isinstance(value, dict):
        return {k: confine(v) for k, v in value.items()}
    return value


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if isinstance(case.body, (dict, list)):
        case.body = confine(case.body)
    switch = case.method.upper() == "PUT" and case.path == "/admin/v1/channels/{id}"
    if switch and isinstance(case.body, dict) and case.body.get("enabled") is False:
        case.body = {**case.body, "enabled": True}
