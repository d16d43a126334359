"""An S3 bucket on the loopback server, for tests: its objects are the server's files under the
bucket's path, listed by ListObjectsV2 in S3's real layout.

``GET <bucket>/?list-type=2&prefix=...[&continuation-token=...][&max-keys=...]`` answers a
``ListBucketResult`` document (namespace ``http://s3.amazonaws.com/doc/2006-03-01/``) with
``Name``, ``Prefix``, ``KeyCount``, ``MaxKeys``, ``IsTruncated``, the ``ContinuationToken`` it
was given, ``NextContinuationToken`` while truncated (an opaque token), and one ``Contents``
(``Key``, ``LastModified``, ``ETag`` = the MD5 of a single-part upload, quoted, ``Size``,
``StorageClass``) per object, keys in byte order. Errors are S3's ``Error`` documents: a bad
continuation token is HTTP 400 ``InvalidArgument``; a listing without ``list-type=2`` is answered
as S3's version 1 (``Marker``) would be, which the code under test must not ask for, so it is
refused here (HTTP 400 ``InvalidArgument``). ``page`` (default 1000, S3's) may be set smaller so
that a few objects span several pages; ``deny`` makes every request HTTP 403 ``AccessDenied``;
``fail(503, "SlowDown", retry_after="0")`` queues one error answer for the next listing request.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class Bucket:
    """The bucket ``name`` at ``server.url('/' + name)``: ``bucket.endpoint``."""

    def __init__(self, server: Any, name: str, page: int = 1000) -> None:
        self.server, self.name, self.page, self.deny = server, name, page, False
        self.endpoint = server.add_route(f"/{name}/", self._list).rstrip("/")
        self.failures: list[tuple[int, str, str | None]] = []

    def fail(self, status: int, code: str, retry_after: str | None = None) -> None:
        self.failures.append((status, code, retry_after))

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` as object ``key``; return its URL."""
        return self.server.add_file(f"/{self.name}/{key}", data)

    def delete(self, key: str) -> None:
        self.server.files.pop(f"/{self.name}/{key}", None)

    def keys(self) -> list[str]:
        head = f"/{self.name}/"
        return sorted(p[len(head):] for p in self.server.files if p.startswith(head))

    def _list(self, method: str, query: dict[str, list[str]], body: bytes
              ) -> tuple[int, dict[str, str], bytes]:
        if self.deny:
            return _error(403, "AccessDenied", "Access Denied")
        if self.failures:
            status, code, retry_after = self.failures.pop(0)
            answer = _error(status, code, "Please reduce your request rate.")
            if retry_after is not None:
                answer[1]["Retry-After"] = retry_after
            return answer
        if query.get("list-type") != ["2"]:
            return _error(400, "InvalidArgument", "only ListObjectsV2 is served here")
        prefix = (query.get("prefix") or [""])[0]
        max_keys = min(int((query.get("max-keys") or ["1000"])[0]), self.page)
        token = (query.get("continuation-token") or [None])[0]
        keys = [k for k in self.keys() if k.startswith(prefix)]
        start = 0
        if token is not None:
            try:
                after = base64.b64decode(token.encode(), validate=True).decode()
            except ValueError:
                return _error(400, "InvalidArgument", "The continuation token provided is "
                              "incorrect")  # fmt: skip
            start = sum(1 for k in keys if k <= after)
        chunk = keys[start:start + max_keys]
        truncated = start + max_keys < len(keys)
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">',
                 f"<Name>{self.name}</Name><Prefix>{escape(prefix)}</Prefix>",
                 f"<KeyCount>{len(chunk)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
                 f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]  # fmt: skip
        if token is not None:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if truncated:
            parts.append("<NextContinuationToken>"
                         f"{base64.b64encode(chunk[-1].encode()).decode()}"
                         "</NextContinuationToken>")  # fmt: skip
        for key in chunk:
            data = self.server.files[f"/{self.name}/{key}"]
            parts.append(
                f"<Contents><Key>{escape(key)}</Key>"
                "<LastModified>2024-10-01T12:00:00.000Z</LastModified>"
                f"<ETag>&quot;{hashlib.md5(data).hexdigest()}&quot;</ETag>"
                f"<Size>{len(data)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts.append("</ListBucketResult>")
        return 200, {"Content-Type": "application/xml"}, "".join(parts).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message><RequestId>4442587FB7D0A2F9</RequestId>"
            "<HostId>loopback</HostId></Error>")  # fmt: skip
    return status, {"Content-Type": "application/xml"}, body.encode()
