"""Image bytes of a Label Studio task: inline ``data:`` URIs, or URLs fetched over HTTP(S).

Label Studio keeps uploaded files itself and hands backends a path such as
``/data/upload/3/cat.png``; such paths are resolved against the ``hostname`` of the last ``/setup``
and fetched with its ``access_token`` (sent only to that host). Absolute http(s) URLs elsewhere are
fetched without credentials. Cloud-storage URIs (``s3://``, ``gs://``, ...) are Label Studio's to
resolve and are refused with a clear problem.
"""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

FETCH_TIMEOUT_S = 20.0
USER_AGENT = "svp-label-studio-backend"


@dataclass(frozen=True)
class MediaSource:
    """Where relative task URLs point, and the token Label Studio gave for them."""

    hostname: str | None = None
    access_token: str | None = None


def is_inline(value: str) -> bool:
    return value.startswith("data:")


def _decode_data_uri(value: str, max_bytes: int) -> bytes:
    header, sep, payload = value.partition(",")
    if not sep:
        raise ValueError("malformed data: URI (no comma)")
    if not header.endswith(";base64"):
        raise ValueError("data: URIs must be base64-encoded")
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise ValueError(f"the inline image is over the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data: URI is not valid base64") from None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def authorization_header(token: str) -> str:
    # Label Studio's legacy tokens go as "Token <key>"; personal access tokens are JWTs (three
    # dot-separated parts) and go as a bearer token.
    return f"Bearer {token}" if token.count(".") == 2 else f"Token {token}"


def resolve_url(value: str, source: MediaSource) -> tuple[str, bool]:
    """(absolute URL, whether it is on the Label Studio host and gets its token)."""
    parts = urllib.parse.urlsplit(value)
    if not parts.scheme:
        if not source.hostname:
            raise ValueError(
                f"{value!r} is a Label Studio path, but no hostname is known: Label Studio sends it with /setup"
            )
        value = urllib.parse.urljoin(source.hostname.rstrip("/") + "/", value.lstrip("/"))
        parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"cannot fetch {parts.scheme}:// URLs; let Label Studio serve the storage (presigned or proxied URLs)"
        )
    same_host = bool(source.hostname) and _origin(value) == _origin(source.hostname)  # type: ignore[arg-type]
    return value, same_host


def fetch_image(value: str, source: MediaSource, *, max_bytes: int, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The encoded image a task's value points to; raises ValueError naming the problem."""
    if is_inline(value):
        return _decode_data_uri(value, max_bytes)
    url, same_host = resolve_url(value, source)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if same_host and source.access_token:
        # Unredirected: a redirect (e.g. to presigned storage) must not carry Label Studio's token.
        request.add_unredirected_header("Authorization", authorization_header(source.access_token))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise ValueError(f"fetching {url} failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ValueError(f"fetching {url} failed: {reason}") from None
    if len(data) > max_bytes:
        raise ValueError(f"the image at {url} is over the limit of {max_bytes} bytes")
    return data
