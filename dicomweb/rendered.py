"""Retrieve Rendered (PS3.18 10.4, 8.3.5) and thumbnails (PS3.18 10.4.1.1.4, 10.4.3.3.4).

Resources and what each renders:

- instance `/rendered`: a single-frame image; a multi-frame image as an animated GIF
  of all its frames, or its first frame in JPEG or PNG.
- frames `/frames/{list}/rendered`: one frame as any rendered type; several frames, in
  the order listed, only as an animated GIF.
- study and series `/rendered`: their representative image (below).
- `/thumbnail` at every level: the representative image, by default fitted into 128 x
  128 pixels and without annotation (a thumbnail carries no patient information).

The representative image of a series is its middle image instance in retrieve order
(Instance Number), at its middle frame; that of a study is the representative image
of its first series (by Series Number) that holds images. An instance's thumbnail is
its middle frame; a frame list's thumbnail its first frame.

Everything is checked before rendering (UIDs, parameters, media type, the resource,
size limits), so errors are statuses. The ETag is the cache key, which names the
instance's content hash and every parameter, so If-None-Match is answered without
reading a frame. Decoding, rendering and encoding run in worker threads, as many at a
time as there are cores.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from anyio import CapacityLimiter, to_thread
from pydicom.uid import ExplicitVRBigEndian
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.config import Config
from dicomweb.errors import BadRequest, NotAcceptable, NotFound, PayloadTooLarge
from dicomweb.index import Index
from dicomweb.index.repository import StoredInstance
from dicomweb.pixels.frameinfo import PALETTE, FrameInfo, TranscodeError
from dicomweb.pixels.lut import VoiTable, Window
from dicomweb.pixels.metadata import Attributes, RenderError, bulk_paths
from dicomweb.pixels.render import (
    GIF,
    JPEG,
    MEDIA_TYPES,
    Viewport,
    decode_stored_frame,
    encode_animation,
    encode_image,
    render_frame,
    resolve_voi,
)
from dicomweb.rendercache import RenderCache
from dicomweb.renderparams import RenderParameters, choose_media_type, parse_parameters
from dicomweb.resources import etag_matches, missing, path_uids
from dicomweb.retrieve import (
    bulk_value,
    check_frame_numbers,
    frame_sources,
    parse_frame_list,
    pixel_data_tag,
)
from dicomweb.storage import BlobStore

__all__ = ["Renderer", "retrieve_rendered", "retrieve_thumbnail"]

THUMBNAIL_SIZE: Final = 128
_THUMBNAIL_VIEWPORT: Final = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
# Resources of one instance never change their rendering (the key names the content
# hash); a study's or series' representative image may, as instances arrive.
_CACHE_INSTANCE: Final = "private, max-age=86400"
_CACHE_REPRESENTATIVE: Final = "private, no-cache"
_DEFAULT_FRAME_TIME_MS: Final = 100.0


@dataclass(frozen=True, slots=True)
class Target:
    """What a request renders: frames of one instance (several: an animation)."""

    stored: StoredInstance
    frames: tuple[int, ...]
    media_type: str
    cache_control: str


class Renderer:
    """The rendering resources of a process: the cache and the worker limit."""

    def __init__(self, config: Config, workers: int | None = None) -> None:
        self.config = config
        self.cache = RenderCache(
            config.data_dir / "cache" / "rendered",
            config.render_cache_memory_bytes,
            config.render_cache_disk_bytes,
        )
        self._limiter = CapacityLimiter(workers or os.cpu_count() or 1)

    async def run(self, work: Callable[..., bytes], *args: Any) -> bytes:
        """`work(*args)` in a worker thread, within the limit."""
        return await to_thread.run_sync(work, *args, limiter=self._limiter)


# Handlers


async def retrieve_rendered(request: Request) -> Response:
    """GET a rendered study, series, instance or frames (PS3.18 10.4.1.1.3)."""
    params = _parameters(request, thumbnail=False)
    target = await _rendered_target(request, params)
    return await _respond(request, target, params, thumbnail=False)


async def retrieve_thumbnail(request: Request) -> Response:
    """GET the thumbnail of a study, series, instance or frames (PS3.18 10.4.1.1.4)."""
    params = _parameters(request, thumbnail=True)
    target = await _thumbnail_target(request, params)
    return await _respond(request, target, params, thumbnail=True)


def _parameters(request: Request, *, thumbnail: bool) -> RenderParameters:
    config = _renderer(request).config
    return parse_parameters(
        request.query_params.multi_items(),
        max_viewport=config.render_max_viewport,
        thumbnail=thumbnail,
        header_accept=request.headers.get("accept"),
    )


# Targets


async def _rendered_target(request: Request, params: RenderParameters) -> Target:
    study, series, sop = path_uids(request.path_params)
    index = _index(request)
    if sop is None:
        stored, frame = await _representative(index, study, series)
        media_type = choose_media_type(params.accept, MEDIA_TYPES, JPEG)
        return Target(stored, (frame,), media_type, _CACHE_REPRESENTATIVE)
    assert series is not None
    listed = request.path_params.get("frames")
    numbers = parse_frame_list(listed) if listed is not None else None
    stored = await _image(index, study, series, sop)
    if numbers is not None:
        check_frame_numbers(numbers, stored.number_of_frames)
        several = len(numbers) > 1
        allowed = (GIF,) if several else MEDIA_TYPES
        media_type = choose_media_type(params.accept, allowed, GIF if several else JPEG)
        return Target(stored, tuple(numbers), media_type, _CACHE_INSTANCE)
    multiframe = stored.number_of_frames > 1
    media_type = choose_media_type(params.accept, MEDIA_TYPES, GIF if multiframe else JPEG)
    if media_type == GIF and multiframe:
        frames = tuple(range(1, stored.number_of_frames + 1))
    else:
        frames = (1,)
    return Target(stored, frames, media_type, _CACHE_INSTANCE)


async def _thumbnail_target(request: Request, params: RenderParameters) -> Target:
    study, series, sop = path_uids(request.path_params)
    index = _index(request)
    media_type = choose_media_type(params.accept, MEDIA_TYPES, JPEG)
    if sop is None:
        stored, frame = await _representative(index, study, series)
        return Target(stored, (frame,), media_type, _CACHE_REPRESENTATIVE)
    assert series is not None
    stored = await _image(index, study, series, sop)
    listed = request.path_params.get("frames")
    if listed is not None:
        numbers = parse_frame_list(listed)
        check_frame_numbers(numbers, stored.number_of_frames)
        return Target(stored, (numbers[0],), media_type, _CACHE_INSTANCE)
    return Target(stored, (_middle(stored.number_of_frames),), media_type, _CACHE_INSTANCE)


async def _representative(
    index: Index, study: str, series: str | None
) -> tuple[StoredInstance, int]:
    """The representative image of a study or series: (instance, frame number)."""
    summaries = await index.list_instances(study, series)
    if not summaries:
        raise NotFound(missing(study, series, None))
    images = [s for s in summaries if s.number_of_frames > 0]
    if not images:
        raise NotAcceptable(f"no instance of {series or study} has pixel data to render")
    first_series = [s for s in images if s.series_instance_uid == images[0].series_instance_uid]
    chosen = first_series[len(first_series) // 2]
    found = await index.get_instances([chosen.sop_instance_uid])
    if not found:
        raise NotFound(f"instance {chosen.sop_instance_uid} is no longer stored")
    return found[0], _middle(chosen.number_of_frames)


def _middle(number_of_frames: int) -> int:
    return (max(number_of_frames, 1) + 1) // 2


async def _image(index: Index, study: str, series: str, sop: str) -> StoredInstance:
    found = await index.get_instances([sop])
    if not found or found[0].study_instance_uid != study or found[0].series_instance_uid != series:
        raise NotFound(missing(study, series, sop))
    if found[0].number_of_frames < 1 or pixel_data_tag(found[0]) is None:
        raise NotAcceptable(f"instance {sop} has no pixel data: only images are rendered")
    return found[0]


# Response


def cache_key(target: Target, params: RenderParameters, *, thumbnail: bool) -> str:
    """The key of a rendered result: the instance's identity and content hash, its
    frames, the media type and every parameter."""
    stored = target.stored
    parts = (
        stored.sop_instance_uid,
        stored.sha256,
        ",".join(str(n) for n in target.frames),
        target.media_type,
        params.digest(),
        "thumbnail" if thumbnail else "rendered",
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


async def _respond(
    request: Request, target: Target, params: RenderParameters, *, thumbnail: bool
) -> Response:
    key = cache_key(target, params, thumbnail=thumbnail)
    etag = f'"{key[:40]}"'
    headers = {"ETag": etag, "Cache-Control": target.cache_control, "Vary": "Accept"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    renderer = _renderer(request)
    body = await renderer.cache.get(key)
    if body is None:
        body = await _render(request, renderer, target, params, thumbnail=thumbnail)
        await renderer.cache.put(key, body)
    return Response(body, media_type=target.media_type, headers=headers)


async def _render(
    request: Request,
    renderer: Renderer,
    target: Target,
    params: RenderParameters,
    *,
    thumbnail: bool,
) -> bytes:
    stored = target.stored
    metadata: dict[str, Any] = await to_thread.run_sync(orjson.loads, stored.metadata)
    info = _frame_info(stored, metadata)
    _check_limits(renderer.config, info, len(target.frames))
    blobs = _blobs(request)
    frames = [
        await source.read(blobs) for source in await frame_sources(blobs, stored, target.frames)
    ]
    job = _Job(
        transfer_syntax=stored.transfer_syntax_uid,
        info=info,
        metadata=metadata,
        bulk=await _bulk_values(blobs, stored, metadata, params.overlays),
        byteorder=">" if stored.transfer_syntax_uid == ExplicitVRBigEndian else "<",
        frame_numbers=target.frames,
        media_type=target.media_type,
        params=params,
        viewport=params.viewport or (_THUMBNAIL_VIEWPORT if thumbnail else None),
    )
    try:
        return await renderer.run(job.run, frames)
    except RenderError as exc:
        raise BadRequest(
            f"instance {stored.sop_instance_uid} cannot be rendered so: {exc}"
        ) from exc
    except TranscodeError as exc:
        raise NotAcceptable(
            f"instance {stored.sop_instance_uid} cannot be rendered: {exc}"
        ) from exc


def _frame_info(stored: StoredInstance, metadata: dict[str, Any]) -> FrameInfo:
    try:
        return FrameInfo.from_json(metadata)
    except TranscodeError as exc:
        raise NotAcceptable(
            f"instance {stored.sop_instance_uid} cannot be rendered: {exc}"
        ) from exc


def _check_limits(config: Config, info: FrameInfo, frames: int) -> None:
    """413 before any frame is read or decoded: the sizes come from the metadata, and
    decoding checks that each frame's codestream declares the same."""
    if frames > config.render_max_frames:
        raise PayloadTooLarge(
            f"an animation of {frames} frames is more than {config.render_max_frames}; "
            "ask for fewer with /frames/{list}/rendered"
        )
    samples = info.rows * info.columns * info.samples_per_pixel * frames
    if samples > config.render_max_pixels:
        raise PayloadTooLarge(
            f"rendering {frames} frame(s) of {info.rows} x {info.columns} x "
            f"{info.samples_per_pixel} samples ({samples}) is past the limit of "
            f"{config.render_max_pixels}"
        )


async def _bulk_values(
    blobs: BlobStore, stored: StoredInstance, metadata: dict[str, Any], overlays: bool
) -> dict[str, bytes]:
    """The values of the BulkDataURIs rendering needs (LUTs, palettes, overlays)."""
    values: dict[str, bytes] = {}
    for path in bulk_paths(metadata, overlays=overlays):
        try:
            source = await bulk_value(blobs, stored, path)
        except NotFound:
            continue  # rendering says which value it lacks, if it needs it
        values[path] = await source.read(blobs)
    return values


@dataclass(frozen=True)
class _Job:
    """Decode, render and encode the frames of one request: CPU work for a thread."""

    transfer_syntax: str
    info: FrameInfo
    metadata: dict[str, Any]
    bulk: dict[str, bytes]
    byteorder: str
    frame_numbers: tuple[int, ...]
    media_type: str
    params: RenderParameters
    viewport: Viewport | None

    def run(self, frames: Sequence[bytes]) -> bytes:
        decoded = [decode_stored_frame(f, self.transfer_syntax, self.info) for f in frames]
        window: Window | VoiTable | None = self.params.window
        if len(decoded) > 1 and self._grey():
            # One window for every frame, so that an animation does not flicker.
            attributes = Attributes(self.metadata, self.frame_numbers[0], self.bulk, self.byteorder)
            window = resolve_voi(decoded, self.info, attributes, window)
        images = [
            render_frame(
                pixels,
                self.info,
                self.metadata,
                window=window,
                viewport=self.viewport,
                overlays=self.params.overlays,
                annotation=self.params.annotation,
                frame_number=number,
                bulk=self.bulk,
                byteorder=self.byteorder,
            )
            for pixels, number in zip(decoded, self.frame_numbers, strict=True)
        ]
        if len(images) == 1:
            return encode_image(images[0], self.media_type, self.params.quality)
        return encode_animation(images, self._frame_time())

    def _grey(self) -> bool:
        info = self.info
        return info.samples_per_pixel == 1 and info.photometric_interpretation != PALETTE

    def _frame_time(self) -> float:
        """Milliseconds per frame: Frame Time, else Cine Rate or Recommended Display
        Frame Rate, else 100."""
        attributes = Attributes(self.metadata)
        frame_time = attributes.number("00181063", 0.0)
        if frame_time > 0:
            return frame_time
        for rate_tag in ("00180040", "00082144"):
            rate = attributes.number(rate_tag, 0.0)
            if rate > 0:
                return 1000.0 / rate
        return _DEFAULT_FRAME_TIME_MS


def _index(request: Request) -> Index:
    index: Index = request.app.state.index
    return index


def _blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


def _renderer(request: Request) -> Renderer:
    """The app's Renderer, made on first use from its settings (it holds no connection,
    so it needs no place in the lifespan)."""
    state = request.app.state
    renderer: Renderer | None = getattr(state, "renderer", None)
    if renderer is None:
        config: Config = state.config
        renderer = Renderer(config)
        state.renderer = renderer
    return renderer
