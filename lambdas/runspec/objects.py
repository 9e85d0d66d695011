"""Reading an S3 object that may not exist yet, without relying on S3's 404.

S3 answers a GetObject for a missing key with 404 NoSuchKey only to callers holding
``s3:ListBucket`` on the bucket, and with 403 AccessDenied to everyone else; AWS does not say
which condition context (``s3:prefix``?) that implicit check carries, and the platform's roles
hold ``s3:ListBucket`` only for their own prefixes. Listing the key as a prefix is a documented
``s3:ListBucket`` request with ``s3:prefix`` set, which those grants allow: absence is then an
answer, and a 403 on the read stays a real refusal.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["object_exists", "read_json_if_exists"]


def object_exists(s3: S3Client, bucket: str, key: str) -> bool:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(item.get("Key") == key for item in listed.get("Contents", []))


def read_json_if_exists(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """The JSON object at ``key``, or None when there is no such object."""
    if not object_exists(s3, bucket, key):
        return None
    document: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return document
