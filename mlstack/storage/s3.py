"""The ``s3`` backend: any S3-compatible store (AWS, MinIO, Ceph, moto_server) via boto3; downloads are presigned GETs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from mlstack.storage.base import KEY_RE, ObjectMissing, ObjectRef, StorageUnavailable

logger = logging.getLogger(__name__)


class S3Storage:
    backend = "s3"

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None, region: str, access_key_id: str | None,
                 secret_access_key: str | None, timeout_s: float):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Few retries and short timeouts: a dead store must fail a background store quickly, not hold threads.
        config = Config(signature_version="s3v4", connect_timeout=timeout_s, read_timeout=timeout_s,
                        retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"})
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key, config=config)

    def _name(self, key: str) -> str:
        if KEY_RE.fullmatch(key) is None:
            raise ObjectMissing("no such object")
        return self.prefix + key

    def _call(self, op: str, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kw)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing("no such object") from None
            logger.error("S3 %s failed: %s", op, code)
            raise StorageUnavailable(f"the object store refused {op} ({code})") from exc
        except BotoCoreError as exc:
            logger.error("S3 %s failed: %s", op, type(exc).__name__)
            raise StorageUnavailable("the object store is unreachable") from exc

    def put(self, data: bytes, content_type: str | None, owner: int) -> ObjectRef:
        ref = ObjectRef.of(data, content_type, owner)
        self.write(ref, data)
        return ref

    def write(self, ref: ObjectRef, data: bytes) -> None:
        if self.exists(ref.key):  # content-addressed: the same key holds the same bytes
            return
        self._call("put_object", Key=self._name(ref.key), Body=data, ContentType=ref.content_type,
                   Metadata={"sha256": ref.sha256, "owner": str(ref.owner)})

    def get(self, key: str) -> bytes:
        body: bytes = self._call("get_object", Key=self._name(key))["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self._name(key))
        except ObjectMissing:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=self._name(key))

    def _list(self, owner: int | None) -> Iterator[dict[str, Any]]:
        prefix = self.prefix + (f"u{int(owner)}/" if owner is not None else "")
        token: dict[str, Any] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=prefix, **token)
            for item in page.get("Contents", []):
                if KEY_RE.fullmatch(item["Key"][len(self.prefix):]):
                    yield item
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def keys(self, owner: int | None = None) -> Iterator[str]:
        for item in self._list(owner):
            yield str(item["Key"][len(self.prefix):])

    def usage(self, owner: int) -> int:
        return sum(int(item["Size"]) for item in self._list(owner))

    def signed_url(self, key: str, expires_s: int) -> str:
        url: str = self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": self._name(key)},
                                                      ExpiresIn=int(expires_s))
        return url

    def check(self) -> None:
        self._call("head_bucket")

    def close(self) -> None:
        self.client.close()
