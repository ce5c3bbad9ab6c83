"""List paging and list resourceVersions, encoded and checked as kube-apiserver does.

Clients treat a `continue` token as opaque, but they do branch on how the server
answers around it: a page whose pinned revision is gone is `410 Expired` with a
fresh token (resourceVersion -1: "carry on, inconsistently") in the Status's
metadata, which client-go's pager and `kubectl get --chunk-size` know how to use.
So the token has kube-apiserver's shape (base64url of `{"v": "meta.k8s.io/v1",
"rv": N, "start": "KEY\\u0000"}`, the start key relative to the list's prefix),
the messages are its messages, and a token that does not decode is a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from dataclasses import dataclass
from typing import Any

import orjson

from pystol_sim.errors import ApiError

ObjectKey = tuple[str, str]

CONTINUE_VERSION = "meta.k8s.io/v1"
LATEST = -1  # a token's rv meaning "continue from the latest state"
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You "
    "can start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list.")
MATCH_EXACT = "Exact"
MATCH_NOT_OLDER = "NotOlderThan"


@dataclass(frozen=True)
class ContinueToken:
    rv: int  # the pinned resourceVersion; LATEST (or any negative) for "now"
    start: ObjectKey  # the first key the page may return
    start_text: str  # the key as encoded, to offer it again with a 410


class ExpiredContinue(ApiError):
    """410 Expired whose Status carries a token that continues at the latest state."""

    def __init__(self, token: ContinueToken) -> None:
        super().__init__(410, INCONSISTENT_CONTINUE, reason="Expired")
        self.continue_token = encode_text(LATEST, token.start_text)

    def status(self) -> dict[str, Any]:
        body = super().status()
        body["metadata"] = {"continue": self.continue_token}
        return body


def _invalid_token(reason: str) -> ApiError:
    return ApiError(400, f"invalid continue token: continue key is not valid{reason}")


def encode_text(rv: int, start_text: str) -> str:
    raw = orjson.dumps({"v": CONTINUE_VERSION, "rv": rv, "start": start_text})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def start_text_after(key: ObjectKey, namespace: str, namespaced: bool) -> str:
    """The start key of the page after `key`: relative to the list's prefix (the
    namespace's, or the type's), with a NUL so that it sorts right after `key`."""
    if namespaced and not namespace:
        return f"{key[0]}/{key[1]}\x00"
    return f"{key[1]}\x00"


def encode_continue(rv: int, last: ObjectKey, namespace: str, namespaced: bool) -> str:
    return encode_text(rv, start_text_after(last, namespace, namespaced))


def decode_continue(text: str, namespace: str, namespaced: bool, current_rv: int
                    ) -> ContinueToken:
    """Parse a `continue` query parameter; 400 with kube-apiserver's reasons if it is not
    one this server could have issued."""
    try:
        data = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
        token = orjson.loads(data)
    except (binascii.Error, ValueError) as error:
        raise _invalid_token(f": {error}") from error
    if not isinstance(token, dict):
        raise _invalid_token(": not a JSON object")
    if token.get("v") != CONTINUE_VERSION:
        raise _invalid_token(": server does not recognize this encoded version")
    rv = token.get("rv")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0:
        raise _invalid_token(": incorrect encoded start resourceVersion (version "
                             f"{CONTINUE_VERSION})")
    if rv > current_rv:
        raise _invalid_token(f": resourceVersion {rv} is newer than the server's "
                             f"({current_rv})")
    start = token.get("start")
    if not isinstance(start, str) or not start:
        raise _invalid_token(f": encoded start key empty (version {CONTINUE_VERSION})")
    rooted = start if start.startswith("/") else "/" + start
    if posixpath.normpath(rooted) != rooted or rooted.startswith("//"):  # Go's path.Clean
        raise _invalid_token(f": {start}")
    relative = rooted[1:]
    if namespace or not namespaced:
        key = (namespace, relative)
    else:
        ns, _, name = relative.partition("/")
        key = (ns, name)
    return ContinueToken(rv, key, start)


def _list_options_invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}',
                    reason="Invalid",
                    details={"group": "meta.k8s.io", "kind": "ListOptions", "causes": [
                        {"reason": "FieldValueInvalid", "message": message, "field": field}]})


def too_large(rv: int, current: int) -> ApiError:
    return ApiError(504, f"Too large resource version: {rv}, current: {current}",
                    reason="Timeout", details={"causes": [
                        {"reason": "ResourceVersionTooLarge",
                         "message": "Too large resource version"}], "retryAfterSeconds": 1})


def list_revision(query: Any, current_rv: int) -> int | None:
    """The resourceVersion a list (without `continue`) must be served at, or None for the
    latest state, from `resourceVersion` and `resourceVersionMatch` with kube-apiserver's
    rules: Exact (or a non-zero version with `limit` and no match, the legacy paging
    form) reads that revision; NotOlderThan (or no match) reads the latest, and a version
    newer than the server's is 504 Too large resource version."""
    text = query.get("resourceVersion", "")
    match = query.get("resourceVersionMatch", "")
    if match not in ("", MATCH_EXACT, MATCH_NOT_OLDER):
        raise _list_options_invalid("resourceVersionMatch", f'Unsupported value: "{match}": '
                                    'supported values: "", "Exact", "NotOlderThan"')
    if match and not text:
        raise _list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch "
                                    "is forbidden unless resourceVersion is provided")
    if match == MATCH_EXACT and text == "0":
        raise _list_options_invalid("resourceVersionMatch", 'Forbidden: resourceVersionMatch '
                                    '"exact" is forbidden for resourceVersion "0"')
    if not text or text == "0":
        return None
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, f'invalid resource version: "{text}" is not a non-negative integer')
    rv = int(text)
    if rv > current_rv:
        raise too_large(rv, current_rv)
    exact = match == MATCH_EXACT or (not match and bool(query.get("limit")))
    return rv if exact else None


def check_continue_options(query: Any) -> None:
    """`continue` carries its own resourceVersion: another one on the request is refused."""
    if query.get("resourceVersion") not in (None, "", "0"):
        raise ApiError(400, "specifying resource version is not allowed when using continue")
    if query.get("resourceVersionMatch"):
        raise _list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch "
                                    "is forbidden when continue is provided")
