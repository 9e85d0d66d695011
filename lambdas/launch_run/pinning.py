"""Pin what a run trains on: the exact dataset object versions and the image digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from launch_run.checks import CHANNEL_FIELDS, dataset_uris
from runspec.request import S3_URI, RunRequest, RunRequestError
from runspec.run import PinnedDataset, PinnedObject, TrainingImage
from runspec.settings import PlatformSettings

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_s3 import S3Client

__all__ = ["MAX_OBJECTS_PER_CHANNEL", "Channel", "channels", "pin_channel", "resolve_image"]

#: A prefix channel may hold at most this many objects: each is pinned and recorded.
MAX_OBJECTS_PER_CHANNEL = 1000


@dataclass(frozen=True)
class Channel:
    """A data channel of the training job (``train``, ``validation``, ``test``) and the request
    field it comes from (``evaluation.dataset`` for ``test``), which its refusals name."""

    name: str
    field: str
    uri: str
    bucket: str
    key: str


_CHANNEL_OF_FIELD = {field: channel for channel, field in CHANNEL_FIELDS.items()}


def channels(request: RunRequest, settings: PlatformSettings) -> list[Channel]:
    found = []
    for field, uri in dataset_uris(request, settings):
        match = S3_URI.match(uri)
        assert match is not None  # validated by the schema
        channel = _CHANNEL_OF_FIELD[field]
        found.append(Channel(channel, field, uri, match.group("bucket"), match.group("key")))
    return found


def pin_channel(s3: S3Client, channel: Channel, *, field: str | None = None) -> PinnedDataset:
    """The exact object versions a channel holds now: key, version id, ETag and size of each.
    Refusals name ``field`` (default: the channel's request field)."""
    field = field or channel.field
    if channel.key.endswith("/"):
        return PinnedDataset(uri=channel.uri, objects=_pin_prefix(s3, channel, field))
    try:
        head = s3.head_object(Bucket=channel.bucket, Key=channel.key)
    except s3.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise RunRequestError([f"{field}: {channel.uri!r} does not exist"]) from None
        raise
    if head["ContentLength"] == 0:
        raise RunRequestError([f"{field}: {channel.uri!r} is empty"])
    pinned = PinnedObject(
        key=channel.key,
        version_id=head.get("VersionId"),
        etag=head["ETag"].strip('"'),
        size=head["ContentLength"],
    )
    return PinnedDataset(uri=channel.uri, objects=[pinned])


def _pin_prefix(s3: S3Client, channel: Channel, field: str) -> list[PinnedObject]:
    objects: list[PinnedObject] = []
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=channel.bucket, Prefix=channel.key):
        for version in page.get("Versions", []):
            if version["IsLatest"] and not version["Key"].endswith("/"):
                objects.append(
                    PinnedObject(
                        key=version["Key"],
                        version_id=version.get("VersionId"),
                        etag=version["ETag"].strip('"'),
                        size=version["Size"],
                    )
                )
            if len(objects) > MAX_OBJECTS_PER_CHANNEL:
                raise RunRequestError(
                    [f"{field}: {channel.uri!r} holds more than {MAX_OBJECTS_PER_CHANNEL} objects"]
                )
    if not objects:
        raise RunRequestError([f"{field}: {channel.uri!r} holds no objects"])
    return objects


def resolve_image(request: RunRequest, settings: PlatformSettings, ecr: ECRClient) -> TrainingImage:
    """The image the job runs, pinned by digest for the custom image."""
    if request.training.option == "script-mode":
        return TrainingImage(
            option="script-mode",
            uri=settings.script_mode_image_uri,
            source_s3_uri=settings.script_source_s3_uri,
        )
    repository_uri, _, tag = settings.custom_image_uri.rpartition(":")
    repository = repository_uri.split("/", 1)[1]
    response = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    digest = response["imageDetails"][0]["imageDigest"]
    return TrainingImage(
        option="custom-image", uri=f"{repository_uri}@{digest}", digest=digest, tag=tag
    )
