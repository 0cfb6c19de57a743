"""DANDI sources: parse identifiers, resolve assets with the dandi client, stream or download.

Accepted source forms (:func:`parse_source`)::

    DANDI:000688/sub-C/sub-C_ses-1.nwb              most recent published version, else draft
    DANDI:000688@0.240101.1200/sub-C/sub-C_ses-1.nwb
    dandi://DANDI/000688@draft/sub-C/sub-C_ses-1.nwb  (the dandi client's own URL form)
    https://dandiarchive.org/dandiset/000688/draft/files?location=sub-C/sub-C_ses-1.nwb
    000688  or  DANDI:000688                         bare dandiset id, with ``asset=PATH|GLOB``

Parsing is pure string work.  (``dandi.dandiarchive.parse_dandi_url`` is not used: it contacts
the archive to look up the instance, without a timeout, before any asset is asked for.)

:func:`resolve` and :func:`list_assets` use the real ``dandi`` client (``DandiAPIClient``,
``get_dandiset``, ``get_asset_by_path``, ``get_content_url(follow_redirects=1,
strip_query=True)``) through a subclass whose requests have a timeout and a bounded number of
retries: the stock client retries each request twelve times (about a minute) when the archive is
unreachable.  The API URL comes from ``api_url=``, else ``$NWB_LTR_DANDI_API_URL``, else the
instance named in a ``dandi://`` source, else ``$DANDI_INSTANCE``, else the DANDI archive.
Downloads land in ``<cache_dir>/dandi/<dandiset>/<version>/<asset path>`` after their SHA-256
and DANDI e-tag match the archive's digests, and are reused without any blob request.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from nwb_ltr._dandi_http import connect, download_asset, network_errors
from nwb_ltr.errors import ConfigError, InvalidSourceError, SourceNotFoundError

logger = logging.getLogger(__name__)

API_URL_ENV = "NWB_LTR_DANDI_API_URL"
CACHE_DIR_ENV = "NWB_LTR_CACHE_DIR"
_MAX_LISTED = 10
_ID_RE = re.compile(r"\d{6}")
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+|draft")
_GUI_RE = re.compile(
    r"https?://(?P<host>(?:gui\.|www\.|sandbox\.)?dandiarchive\.org)/(?:#/)?dandiset/(?P<id>\d+)"
    r"(?:/(?P<version>[^/?#]+))?(?:/files)?/?(?:\?location=(?P<location>[^&#]*))?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class DandiSource:
    """A parsed DANDI source: dandiset id, optional version and asset path (or glob)."""

    dandiset_id: str
    version: str | None = None
    asset_path: str | None = None
    instance: str | None = None  # a known dandi instance name, from dandi:// or GUI URLs

    def __str__(self) -> str:
        text = f"DANDI:{self.dandiset_id}" + (f"@{self.version}" if self.version else "")
        return text + (f"/{self.asset_path}" if self.asset_path else "")


@dataclass(frozen=True)
class ResolvedSource:
    """Where to read a DANDI asset: ``local_path`` (downloaded) or ``url`` (to stream)."""

    local_path: Path | None
    url: str | None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AssetInfo:
    """One asset of a dandiset version (``version``: the version listed, e.g. ``draft``)."""

    path: str
    size: int
    asset_id: str
    version: str | None = None


# ----------------------------------------------------------------------------------- parsing


def is_dandi_source(source: object) -> bool:
    """Whether ``source`` is written as a DANDI source (it may still be malformed).

    ``DANDI:...`` (any case), ``dandi://...``, dandiarchive.org dandiset URLs, and bare six-digit
    ids that are not an existing local path.
    """
    if not isinstance(source, str):
        return False
    text = source.strip()
    if text.lower().startswith("dandi:") or _GUI_RE.fullmatch(text):
        return True
    return bool(_ID_RE.fullmatch(text)) and not os.path.exists(text)


def parse_source(source: str) -> DandiSource:
    """Parse a DANDI source string (see the module docstring for the forms).

    Raises
    ------
    InvalidSourceError
        Wrong digit count, unknown version form, empty asset path, unknown instance, ...
    """
    text = source.strip() if isinstance(source, str) else source
    if not isinstance(text, str) or not text:
        raise InvalidSourceError(
            f"empty DANDI source {source!r}; use DANDI:<6-digit id>[@<version>]/<asset path>"
        )
    gui = _GUI_RE.fullmatch(text)
    if gui is not None:
        instance = "dandi-sandbox" if gui["host"].lower().startswith("sandbox") else "dandi"
        location = unquote(gui["location"] or "")
        rest = (
            gui["id"]
            + (f"@{gui['version']}" if gui["version"] else "")
            + (f"/{location}" if location else "")
        )
        return _parse_rest(rest, source, instance)
    if text.lower().startswith("dandi://"):
        instance, _, rest = text[len("dandi://") :].partition("/")
        return _parse_rest(rest, source, _instance_name(instance, source))
    if text.lower().startswith("dandi:"):
        return _parse_rest(text[len("dandi:") :], source, None)
    if text.isdigit():
        return _parse_rest(text, source, None)
    raise InvalidSourceError(
        f"not a DANDI source: {source!r}; use DANDI:<6-digit id>[@<version>]/<asset path> or dandi://DANDI/<id>/<path>"
    )


def _parse_rest(rest: str, source: str, instance: str | None) -> DandiSource:
    head, slash, path = rest.partition("/")
    dandiset_id, at, version = head.partition("@")
    if not _ID_RE.fullmatch(dandiset_id):
        raise InvalidSourceError(
            f"malformed dandiset id {dandiset_id!r} in {source!r}: DANDI ids have 6 digits, like DANDI:000688"
        )
    if at and not _VERSION_RE.fullmatch(version):
        raise InvalidSourceError(
            f"malformed version {version!r} in {source!r}: use 'draft' or a published version like 0.240101.1200"
        )
    asset_path = path.strip("/")
    if slash and not asset_path:
        raise InvalidSourceError(
            f"empty asset path in {source!r}: give one after the id, like DANDI:{dandiset_id}/sub-1/sub-1_ses-1.nwb"
        )
    if ".." in PurePosixPath(asset_path).parts:
        raise InvalidSourceError(f"asset path {asset_path!r} in {source!r} must not contain '..'")
    return DandiSource(dandiset_id, version or None, asset_path or None, instance)


def _instance_name(name: str, source: str) -> str:
    from dandi.consts import known_instances

    if name.lower() not in known_instances:
        known = ", ".join(n.upper() for n in known_instances)
        raise InvalidSourceError(
            f"unknown DANDI instance {name!r} in {source!r}; use one of {known}, or DANDI:<id>/<path> with --api-url"
        )
    return name.lower()


# ----------------------------------------------------------------------------------- public API


def default_cache_dir() -> Path:
    """``$NWB_LTR_CACHE_DIR``, else the user cache folder (``platformdirs``) + ``nwb_ltr``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("nwb_ltr"))


def resolve(
    source: str,
    *,
    asset: str | None = None,
    api_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
) -> ResolvedSource:
    """Find a DANDI asset and return a URL to stream it, or a verified local copy.

    Parameters
    ----------
    source
        A DANDI source (:func:`parse_source`).
    asset
        Asset path or glob (matching exactly one ``.nwb`` asset) when ``source`` is a bare id.
    api_url
        DANDI API base URL, e.g. ``https://api.dandiarchive.org/api`` (see the module docstring).
    cache_dir
        Cache folder for downloads (default :func:`default_cache_dir`).
    download
        Download the asset into the cache (checksums verified) instead of returning a URL.
    timeout
        Seconds per HTTP request (connect and each read).
    retries
        Retries per request after connection errors, timeouts and 429/5xx answers.

    Returns
    -------
    ResolvedSource
        ``url`` (streaming) or ``local_path`` (``download=True``), and ``provenance`` with
        ``source``, ``api_url``, ``dandiset_id``, ``version``, ``asset_path``, ``asset_id``,
        ``sha256``, ``dandi_etag``, ``size`` and ``url`` (the asset's API download URL).

    Raises
    ------
    InvalidSourceError
        Malformed source, no asset given, or a glob matching several assets.
    SourceNotFoundError
        Unknown dandiset, version or asset (the message lists close matches).
    DandiError
        The API cannot be reached or keeps failing, or a download fails verification.
    """
    src = parse_source(source)
    pattern = _asset_pattern(src, asset, source)
    api = _api_url(api_url, src)
    with connect(api, timeout, retries) as client, network_errors(api, timeout, retries):
        dandiset = _get_dandiset(client, src, api)
        remote = _find_asset(dandiset, pattern, api)
        metadata = remote.get_raw_metadata()
        digests = metadata.get("digest") or {}
        provenance = {
            "source": str(source),
            "api_url": api,
            "dandiset_id": src.dandiset_id,
            "version": dandiset.version_id,
            "asset_path": remote.path,
            "asset_id": remote.identifier,
            "sha256": digests.get("dandi:sha2-256"),
            "dandi_etag": digests.get("dandi:dandi-etag"),
            "size": remote.size,
            "url": remote.base_download_url,
        }
        if download:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            dest = root.joinpath(
                "dandi", src.dandiset_id, dandiset.version_id, *PurePosixPath(remote.path).parts
            )
            path = download_asset(client, remote, dest, digests, timeout=timeout, retries=retries)
            return ResolvedSource(local_path=path, url=None, provenance=provenance)
        url = remote.get_content_url(follow_redirects=1, strip_query=True)
        logger.info("streaming %s from %s", remote.path, url)
        return ResolvedSource(local_path=None, url=url, provenance=provenance)


def list_assets(
    dandiset_id: str,
    version: str | None = None,
    *,
    api_url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    nwb_only: bool = True,
) -> list[AssetInfo]:
    """List the (NWB) assets of a dandiset version, sorted by path.

    ``dandiset_id`` may be any DANDI source form; ``version`` overrides the one it names (default:
    most recent published version, else draft).
    """
    src = parse_source(dandiset_id)
    src = DandiSource(src.dandiset_id, version or src.version, None, src.instance)
    api = _api_url(api_url, src)
    with connect(api, timeout, retries) as client, network_errors(api, timeout, retries):
        dandiset = _get_dandiset(client, src, api)
        version_id = dandiset.version_id
        infos = [
            AssetInfo(a.path, a.size, a.identifier, version_id) for a in dandiset.get_assets(order="path")
        ]
    return [a for a in infos if a.path.endswith(".nwb") or not nwb_only]


# ----------------------------------------------------------------------------------- lookups


def _asset_pattern(src: DandiSource, asset: str | None, source: str) -> str:
    if asset is not None and src.asset_path is not None:
        raise InvalidSourceError(
            f"{source!r} already names asset {src.asset_path!r}; drop --asset or give a bare dandiset id"
        )
    pattern = (asset if asset is not None else src.asset_path or "").strip("/")
    if not pattern:
        raise InvalidSourceError(
            f"{source!r} names a dandiset, not an asset; pass --asset PATH (or a glob); "
            f"list its NWB assets with: nwb_ltr inspect DANDI:{src.dandiset_id}"
        )
    return pattern


def _api_url(api_url: str | None, src: DandiSource) -> str:
    url = api_url or os.environ.get(API_URL_ENV)
    if not url:
        from dandi.consts import known_instances

        name = src.instance or os.environ.get("DANDI_INSTANCE", "dandi")
        if name not in known_instances:
            raise ConfigError(f"unknown DANDI_INSTANCE {name!r}; use one of {', '.join(known_instances)}")
        url = known_instances[name].api
    if not re.match(r"https?://[^/]+", url):
        raise ConfigError(
            f"api_url must be an http(s) URL like https://api.dandiarchive.org/api, got {url!r}"
        )
    return url.rstrip("/")


def _get_dandiset(client: Any, src: DandiSource, api: str) -> Any:
    from dandi.exceptions import NotFoundError

    try:
        dandiset = client.get_dandiset(src.dandiset_id, lazy=False)
    except NotFoundError:
        raise SourceNotFoundError(
            f"dandiset {src.dandiset_id} does not exist on {api}; check the id, or --api-url for another instance"
        ) from None
    if src.version is None or src.version == dandiset.version_id:
        return dandiset
    if src.version == "draft":
        return dandiset.for_version(dandiset.draft_version)
    try:
        return dandiset.for_version(src.version)
    except NotFoundError:
        known = ", ".join(v.identifier for v in dandiset.get_versions())
        raise SourceNotFoundError(
            f"dandiset {src.dandiset_id} has no version {src.version!r} on {api}; available: {known}"
        ) from None


def _find_asset(dandiset: Any, pattern: str, api: str) -> Any:
    from dandi.dandiapi import AssetType
    from dandi.exceptions import NotFoundError

    label = f"DANDI:{dandiset.identifier}@{dandiset.version_id}"
    if any(c in pattern for c in "*?["):
        found = [a for a in dandiset.get_assets_by_glob(pattern, order="path") if a.path.endswith(".nwb")]
        if len(found) > 1:
            names = ", ".join(a.path for a in found[:_MAX_LISTED]) + (
                " ..." if len(found) > _MAX_LISTED else ""
            )
            raise InvalidSourceError(
                f"asset glob {pattern!r} matches {len(found)} NWB assets in {label}: {names}; pass a more specific --asset"
            )
        remote = found[0] if found else None
    else:
        try:
            remote = dandiset.get_asset_by_path(pattern)
        except NotFoundError:
            remote = None
    if remote is None:
        paths = [a.path for a in dandiset.get_assets(order="path")]
        close = difflib.get_close_matches(pattern, paths, n=3, cutoff=0.5)
        if close:
            hint = "did you mean " + " or ".join(repr(p) for p in close) + "?"
        else:
            hint = f"it has {len(paths)} assets; list them with: nwb_ltr inspect DANDI:{dandiset.identifier}"
        raise SourceNotFoundError(f"no asset {pattern!r} in {label} on {api}; {hint}")
    if remote.asset_type is not AssetType.BLOB:
        raise InvalidSourceError(
            f"asset {remote.path!r} in {label} is a Zarr asset; nwb_ltr reads HDF5 NWB files"
        )
    return remote


__all__ = [
    "API_URL_ENV",
    "CACHE_DIR_ENV",
    "AssetInfo",
    "DandiSource",
    "ResolvedSource",
    "default_cache_dir",
    "is_dandi_source",
    "list_assets",
    "parse_source",
    "resolve",
]
