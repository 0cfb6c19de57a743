"""Content store and JSON routes of the test DANDI server (see :mod:`nwb_ltr.testing.dandi_server`).

The JSON shapes follow the DANDI archive's REST API as the ``dandi`` client reads them
(``dandi.dandiapi``: ``RemoteDandisetData``, ``Version``, ``VersionInfo``, asset listings and
``BaseRemoteAsset``; ``dandi.utils.ServerInfo`` for ``/server-info`` and ``/api/info/``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

_ID = r"(\d{6})"
_SEG = r"([^/]+)"
_NOT_FOUND = (404, {"detail": "Not found."}, None)


def now_iso() -> str:
    """Current UTC time in the ISO format the DANDI API uses."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _uuid(*parts: str) -> str:
    # The archive uses random UUIDs; deterministic ones make test failures reproducible.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def _schema_version() -> str:
    from dandischema.consts import DANDI_SCHEMA_VERSION

    return str(DANDI_SCHEMA_VERSION)


@dataclass(frozen=True)
class ServedAsset:
    """An asset the test server serves: its ids, local file and digests."""

    asset_id: str
    blob_id: str
    path: str
    file: Path
    size: int
    sha256: str
    dandi_etag: str
    created: str
    modified: str


@dataclass
class _Version:
    version: str
    created: str
    modified: str
    status: str
    assets: dict[str, ServedAsset] = field(default_factory=dict)  # path -> asset


@dataclass
class _Dandiset:
    identifier: str
    created: str
    draft: _Version
    published: list[_Version] = field(default_factory=list)

    def version(self, version_id: str) -> _Version | None:
        if version_id == "draft":
            return self.draft
        return next((v for v in self.published if v.version == version_id), None)


class Store:
    """Dandisets, versions, assets and blobs of the test server (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.dandisets: dict[str, _Dandiset] = {}
        self.assets: dict[str, ServedAsset] = {}
        self.blobs: dict[str, ServedAsset] = {}

    def __getstate__(self) -> dict[str, Any]:  # the server process gets a copy; locks do not pickle
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def add_asset(self, dandiset_id: str, path: str, file: Path) -> ServedAsset:
        from dandischema.digests.dandietag import DandiETag

        if not re.fullmatch(r"\d{6}", dandiset_id):
            raise ValueError(f"dandiset id must be six digits, got {dandiset_id!r}")
        path = path.strip("/")
        if not path or not file.is_file():
            raise ValueError(f"cannot serve {file} as {path!r}: give an asset path and an existing file")
        sha = sha256_file(file)
        stamp = now_iso()
        asset = ServedAsset(
            asset_id=_uuid("asset", dandiset_id, path, sha),
            blob_id=_uuid("blob", sha),
            path=path,
            file=file.resolve(),
            size=file.stat().st_size,
            sha256=sha,
            dandi_etag=DandiETag.from_file(file).as_str(),
            created=stamp,
            modified=stamp,
        )
        with self._lock:
            ds = self.dandisets.get(dandiset_id)
            if ds is None:
                draft = _Version("draft", stamp, stamp, "Valid")
                ds = self.dandisets[dandiset_id] = _Dandiset(dandiset_id, stamp, draft)
            ds.draft.assets[path] = asset
            ds.draft.modified = stamp
            self.assets[asset.asset_id] = asset
            self.blobs[asset.blob_id] = asset
        return asset

    def publish(self, dandiset_id: str, version: str | None = None) -> str:
        with self._lock:
            ds = self.dandisets.get(dandiset_id)
            if ds is None:
                raise KeyError(f"no dandiset {dandiset_id} on this server; add an asset first")
            if version is None:
                moment = datetime.now(timezone.utc)
                version = moment.strftime("0.%y%m%d.%H%M")
                while ds.version(version) is not None:  # same minute: bump the minute field
                    head, minute = version.rsplit(".", 1)
                    version = f"{head}.{int(minute) + 1:04d}"
            if not re.fullmatch(r"\d+\.\d+\.\d+", version) or ds.version(version) is not None:
                raise ValueError(f"version {version!r} is not a new N.N.N version id of {dandiset_id}")
            stamp = now_iso()
            ds.published.append(_Version(version, stamp, stamp, "Published", dict(ds.draft.assets)))
            return version


class ApiRouter:
    """Maps a GET/HEAD on an API path to ``(status, json payload, redirect location)``."""

    def __init__(self, store: Store, base_url: str) -> None:
        self.store = store
        self.base_url = base_url
        self.api_url = f"{base_url}/api"
        v = rf"/api/dandisets/{_ID}/versions/{_SEG}"
        self._routes = [
            (r"/server-info|/api/info", self._info),
            (r"/api/dandisets", self._dandisets),
            (rf"/api/dandisets/{_ID}", self._dandiset),
            (rf"/api/dandisets/{_ID}/versions", self._versions),
            (v, self._version_metadata),
            (rf"{v}/info", self._version_info),
            (rf"{v}/assets", self._assets),
            (rf"{v}/assets/{_SEG}", lambda q, *a: self._asset(*a, what="metadata")),
            (rf"{v}/assets/{_SEG}/info", lambda q, *a: self._asset(*a, what="info")),
            (rf"{v}/assets/{_SEG}/download", lambda q, *a: self._asset(*a, what="download")),
            (rf"/api/assets/{_SEG}", lambda q, a: self._asset(None, None, a, what="metadata")),
            (rf"/api/assets/{_SEG}/info", lambda q, a: self._asset(None, None, a, what="info")),
            (rf"/api/assets/{_SEG}/download", lambda q, a: self._asset(None, None, a, what="download")),
        ]

    def route(self, path: str, query: dict[str, str], raw: str) -> tuple[int, Any, str | None]:
        for pattern, handler in self._routes:
            match = re.fullmatch(pattern + "/?", path)
            if match is not None:
                try:
                    return handler(query, *match.groups())
                except (ValueError, KeyError):
                    return 400, {"detail": f"bad request: {raw}"}, None
        return _NOT_FOUND

    # ------------------------------------------------------------------ helpers
    def _page(self, items: list[Any], query: dict[str, str], path: str) -> tuple[int, Any, None]:
        page = int(query.get("page", "1"))
        size = int(query.get("page_size", "100"))
        count = len(items)
        if page < 1 or size < 1 or (page > 1 and (page - 1) * size >= count):
            return 404, {"detail": "Invalid page."}, None

        def link(n: int) -> str:
            return f"{self.base_url}{path}?{urlencode({**query, 'page': str(n)})}"

        return (
            200,
            {
                "count": count,
                "next": link(page + 1) if page * size < count else None,
                "previous": link(page - 1) if page > 1 else None,
                "results": items[(page - 1) * size : page * size],
            },
            None,
        )

    def _version_json(self, ds: _Dandiset, v: _Version) -> dict[str, Any]:
        return {
            "version": v.version,
            "name": f"Test dandiset {ds.identifier}",
            "asset_count": len(v.assets),
            "size": sum(a.size for a in v.assets.values()),
            "status": v.status,
            "created": v.created,
            "modified": v.modified,
            "dandiset": self._dandiset_core(ds),
        }

    def _dandiset_core(self, ds: _Dandiset) -> dict[str, Any]:
        return {
            "identifier": ds.identifier,
            "created": ds.created,
            "modified": ds.draft.modified,
            "contact_person": "Test, Person",
            "embargo_status": "OPEN",
        }

    def _dandiset_json(self, ds: _Dandiset) -> dict[str, Any]:
        latest = ds.published[-1] if ds.published else None
        return {
            **self._dandiset_core(ds),
            "most_recent_published_version": self._version_json(ds, latest) if latest else None,
            "draft_version": self._version_json(ds, ds.draft),
        }

    def _lookup(self, dandiset_id: str, version: str) -> tuple[_Dandiset, _Version] | None:
        ds = self.store.dandisets.get(dandiset_id)
        v = ds.version(version) if ds is not None else None
        return (ds, v) if ds is not None and v is not None else None

    def _asset_info(self, a: ServedAsset) -> dict[str, Any]:
        return {
            "asset_id": a.asset_id,
            "blob": a.blob_id,
            "zarr": None,
            "path": a.path,
            "size": a.size,
            "created": a.created,
            "modified": a.modified,
        }

    def _asset_metadata(self, a: ServedAsset) -> dict[str, Any]:
        return {
            "id": f"dandiasset:{a.asset_id}",
            "identifier": a.asset_id,
            "schemaKey": "Asset",
            "schemaVersion": _schema_version(),
            "path": a.path,
            "contentSize": a.size,
            "encodingFormat": "application/x-nwb" if a.path.endswith(".nwb") else "application/octet-stream",
            "digest": {"dandi:dandi-etag": a.dandi_etag, "dandi:sha2-256": a.sha256},
            "contentUrl": [f"{self.api_url}/assets/{a.asset_id}/download/", self._blob_url(a)],
            "dateModified": a.modified,
            "blobDateModified": a.modified,
            "access": [{"schemaKey": "AccessRequirements", "status": "dandi:OpenAccess"}],
        }

    def _blob_url(self, a: ServedAsset) -> str:
        return f"{self.base_url}/blobs/{a.blob_id}"

    # ------------------------------------------------------------------ routes
    def _info(self, query: dict[str, str]) -> tuple[int, Any, None]:
        schema = _schema_version()
        return (
            200,
            {
                "schema_version": schema,
                "schema_url": f"https://raw.githubusercontent.com/dandi/schema/master/releases/{schema}/dandiset.json",
                "allowed_schema_versions": [schema],
                "version": "0.0.0+nwb-ltr-test",
                "cli-minimal-version": "0.60.0",
                "cli-bad-versions": [],
                "services": {
                    "api": {"url": self.api_url},
                    "webui": {"url": self.base_url},
                    "jupyterhub": {"url": self.base_url},
                },
            },
            None,
        )

    def _dandisets(self, query: dict[str, str]) -> tuple[int, Any, None]:
        items = [self._dandiset_json(ds) for _, ds in sorted(self.store.dandisets.items())]
        return self._page(items, query, "/api/dandisets/")

    def _dandiset(self, query: dict[str, str], dandiset_id: str) -> tuple[int, Any, None]:
        ds = self.store.dandisets.get(dandiset_id)
        return (200, self._dandiset_json(ds), None) if ds is not None else _NOT_FOUND

    def _versions(self, query: dict[str, str], dandiset_id: str) -> tuple[int, Any, None]:
        ds = self.store.dandisets.get(dandiset_id)
        if ds is None:
            return _NOT_FOUND
        items = [self._version_json(ds, v) for v in [*ds.published, ds.draft]]
        if query.get("order", "").startswith("-"):
            items.reverse()
        return self._page(items, query, f"/api/dandisets/{dandiset_id}/versions/")

    def _version_metadata(
        self, query: dict[str, str], dandiset_id: str, version: str
    ) -> tuple[int, Any, None]:
        found = self._lookup(dandiset_id, version)
        if found is None:
            return _NOT_FOUND
        ds, v = found
        return (
            200,
            {
                "@context": "https://raw.githubusercontent.com/dandi/schema/master/releases/"
                f"{_schema_version()}/context.json",
                "id": f"DANDI:{dandiset_id}/{version}",
                "identifier": f"DANDI:{dandiset_id}",
                "name": f"Test dandiset {dandiset_id}",
                "description": "Served by the nwb_ltr test DANDI server.",
                "version": version,
                "url": f"{self.base_url}/dandiset/{dandiset_id}/{version}",
                "schemaKey": "Dandiset",
                "schemaVersion": _schema_version(),
                "license": ["spdx:CC-BY-4.0"],
                "assetsSummary": {
                    "schemaKey": "AssetsSummary",
                    "numberOfFiles": len(v.assets),
                    "numberOfBytes": sum(a.size for a in v.assets.values()),
                },
            },
            None,
        )

    def _version_info(self, query: dict[str, str], dandiset_id: str, version: str) -> tuple[int, Any, None]:
        found = self._lookup(dandiset_id, version)
        if found is None:
            return _NOT_FOUND
        ds, v = found
        payload = {
            **self._version_json(ds, v),
            "asset_validation_errors": [],
            "version_validation_errors": [],
            "metadata": self._version_metadata(query, dandiset_id, version)[1],
            "contact_person": "Test, Person",
        }
        return 200, payload, None

    def _assets(self, query: dict[str, str], dandiset_id: str, version: str) -> tuple[int, Any, None]:
        found = self._lookup(dandiset_id, version)
        if found is None:
            return _NOT_FOUND
        assets = list(found[1].assets.values())
        if "path" in query:
            assets = [a for a in assets if a.path.startswith(query["path"])]
        if "glob" in query:
            assets = [a for a in assets if fnmatch.fnmatchcase(a.path, query["glob"])]
        order = query.get("order") or "path"
        key = order.lstrip("-")
        if key not in ("path", "created", "modified"):
            raise ValueError(order)
        assets.sort(key=lambda a: (getattr(a, key), a.path), reverse=order.startswith("-"))
        with_metadata = query.get("metadata", "").lower() in ("1", "true")
        items = [
            {**self._asset_info(a), **({"metadata": self._asset_metadata(a)} if with_metadata else {})}
            for a in assets
        ]
        return self._page(items, query, f"/api/dandisets/{dandiset_id}/versions/{version}/assets/")

    def _asset(
        self, dandiset_id: str | None, version: str | None, asset_id: str, *, what: str
    ) -> tuple[int, Any, str | None]:
        asset = self.store.assets.get(asset_id)
        if asset is None:
            return _NOT_FOUND
        if dandiset_id is not None and version is not None:
            found = self._lookup(dandiset_id, version)
            if found is None or found[1].assets.get(asset.path) != asset:
                return _NOT_FOUND
        if what == "download":
            # Like S3 presigned URLs; the client strips the query (strip_query=True).
            return 302, None, f"{self._blob_url(asset)}?X-Amz-Expires=3600&X-Amz-Signature=test"
        if what == "info":
            return 200, {**self._asset_info(asset), "metadata": self._asset_metadata(asset)}, None
        return 200, self._asset_metadata(asset), None
