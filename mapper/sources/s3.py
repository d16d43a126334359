"""Listing a public S3 bucket: the objects under a prefix, by the REST API's ListObjectsV2.

One anonymous ``GET <endpoint>/?list-type=2&prefix=<prefix>`` per page of up to 1000 objects,
answered with a ``ListBucketResult`` XML document (namespace
``http://s3.amazonaws.com/doc/2006-03-01/``): a ``Contents`` element per object (``Key``,
``LastModified``, ``ETag``, ``Size``, ``StorageClass``), ``IsTruncated``, and, while truncated,
``NextContinuationToken``, which the next page's request sends as ``continuation-token``. An
error is an ``Error`` document with a ``Code`` (``AccessDenied``, ``NoSuchBucket``, ``SlowDown``)
and a ``Message``. ``<endpoint>`` is the bucket's URL, ``https://<bucket>.s3.amazonaws.com``
(virtual-hosted style; a redirect to another region is an error naming the listing).

A request is a few hundred bytes of XML; the standard library's ElementTree parses it and
``requests`` sends it, so no AWS SDK is needed for a public bucket.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import requests

from mapper.errors import SourceError
from mapper.sources.http import new_session
from mapper.sources.transfer import backoff_wait, retry_after_seconds

logger = logging.getLogger(__name__)

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MAX_PAGES = 100
"""Pages of a listing at most (100,000 objects): a prefix of one cell holds a few."""


@dataclass(frozen=True)
class S3Object:
    """An object of a listing: its key, size (bytes), ETag (quotes removed) and
    ``LastModified`` (ISO 8601, UTC)."""

    key: str
    size: int
    etag: str
    last_modified: str


def list_objects(
    endpoint: str,
    prefix: str,
    *,
    session: requests.Session | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 30,
) -> list[S3Object]:
    """The objects whose key starts with ``prefix`` in the bucket at ``endpoint``, every page.

    HTTP 5xx, 429 and connection failures are retried ``retries`` times, as downloads are
    (:func:`mapper.sources.transfer.backoff_wait`, or the ``Retry-After``); anything else is one
    SourceError naming the listing's URL and S3's error code.
    """
    url = endpoint.rstrip("/") + "/"
    own_session = session is None
    session = session or new_session()
    objects: list[S3Object] = []
    token: str | None = None
    try:
        for _ in range(MAX_PAGES):
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            root = _get_page(session, url, params, retries, backoff, timeout)
            if root.tag != f"{NS}ListBucketResult":
                raise SourceError(
                    f"{url}?list-type=2&prefix={prefix}: not an S3 listing (root element "
                    f"{root.tag!r}); check that the URL names an S3 bucket"
                )
            for item in root.iter(f"{NS}Contents"):
                objects.append(S3Object(
                    key=item.findtext(f"{NS}Key", ""),
                    size=int(item.findtext(f"{NS}Size", "0")),
                    etag=item.findtext(f"{NS}ETag", "").strip('"'),
                    last_modified=item.findtext(f"{NS}LastModified", ""),
                ))  # fmt: skip
            if root.findtext(f"{NS}IsTruncated", "false") != "true":
                return objects
            token = root.findtext(f"{NS}NextContinuationToken")
            if not token:
                raise SourceError(
                    f"{url}?list-type=2&prefix={prefix}: a truncated listing without a "
                    "NextContinuationToken; the server does not page as S3 does"
                )
    finally:
        if own_session:
            session.close()
    raise SourceError(
        f"{url}?list-type=2&prefix={prefix}: more than {MAX_PAGES} pages; give a longer prefix"
    )


def _get_page(
    session: requests.Session, url: str, params: dict[str, str], retries: int, backoff: float,
    timeout: float,
) -> ET.Element:
    where = f"{url}?list-type=2&prefix={params['prefix']}"
    cause = ""
    for attempt in range(retries + 1):
        wait = backoff_wait(backoff, attempt)
        try:
            resp = session.get(url, params=params, timeout=(timeout, timeout))
        except (requests.ConnectionError, requests.Timeout) as exc:
            cause = f"connection failed ({exc.__class__.__name__})"
        except requests.RequestException as exc:  # an invalid URL, a garbled answer, ...
            raise SourceError(f"{where}: request failed ({exc}); check the bucket's URL") from None
        else:
            if resp.status_code == 200:
                try:
                    return ET.fromstring(resp.content)
                except ET.ParseError as exc:
                    raise SourceError(
                        f"{where}: not XML ({exc}); check that the URL names an S3 bucket"
                    ) from None
            code, message = _s3_error(resp.content)
            cause = f"HTTP {resp.status_code} {code or resp.reason}" + (
                f": {message}" if message else "")
            if resp.status_code != 429 and resp.status_code < 500:
                raise SourceError(
                    f"{where}: {cause}; check the bucket's URL (the listing of a public bucket "
                    "needs no credentials)"
                )
            asked = retry_after_seconds(resp.headers.get("Retry-After"))
            wait = wait if asked is None else asked
        if attempt < retries:
            logger.warning("%s: %s; retrying in %.2f s", where, cause, wait)
            time.sleep(wait)
    raise SourceError(f"{where}: {cause} (gave up after {retries + 1} attempts); retry later")


def _s3_error(body: bytes) -> tuple[str, str]:
    """S3's error ``Code`` and ``Message`` from an ``Error`` document; empty when there is none."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", ""
    return root.findtext("Code", ""), root.findtext("Message", "")
