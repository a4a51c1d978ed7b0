"""Query parameters of Retrieve Rendered and thumbnails (PS3.18 8.3.5), and the choice
of rendered media type (PS3.18 8.3.3.1, 8.7.4).

Parameters: `accept`, `annotation`, `quality`, `viewport`, `window`, `charset`, and two
extensions: `window` (or `preset`) may name a preset window, and `overlays=true` burns
in overlay planes. A malformed value is a BadRequest; unknown parameters are ignored
(PS3.18 8.3.1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dicomweb.errors import BadRequest, NotAcceptable
from dicomweb.negotiation import parse_accept
from dicomweb.pixels.annotation import KINDS
from dicomweb.pixels.lut import LINEAR, LINEAR_EXACT, PRESETS, SIGMOID, Window
from dicomweb.pixels.metadata import RenderError
from dicomweb.pixels.render import GIF, Viewport

__all__ = ["RenderParameters", "choose_media_type", "parse_parameters"]

_FUNCTIONS: Final = {
    "linear": LINEAR,
    "linear-exact": LINEAR_EXACT,
    "linear_exact": LINEAR_EXACT,
    "sigmoid": SIGMOID,
}
# Parameters that may appear once; accept and annotation may be repeated.
_ONCE: Final = ("charset", "overlays", "preset", "quality", "viewport", "window")
_WILDCARDS: Final = ("*/*", "image/*")


@dataclass(frozen=True, slots=True)
class RenderParameters:
    """The rendering parameters of one request, validated."""

    accept: str | None = None
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int | None = None
    annotation: tuple[str, ...] = ()
    overlays: bool = False
    charset: str | None = None

    def digest(self) -> str:
        """A text naming every parameter that was given, for cache keys."""
        parts = (
            f"window={self.window}",
            f"viewport={self.viewport}",
            f"quality={self.quality}",
            f"annotation={','.join(self.annotation)}",
            f"overlays={self.overlays}",
            f"charset={self.charset}",
        )
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def parse_parameters(
    items: Sequence[tuple[str, str]],
    *,
    max_viewport: int,
    thumbnail: bool = False,
    header_accept: str | None = None,
) -> RenderParameters:
    """The parameters of a query string (as (name, value) pairs). Thumbnails take no
    annotation: they carry no patient information (PS3.18 10.4.3.3.4)."""
    given: dict[str, list[str]] = {}
    for name, value in items:
        given.setdefault(name, []).append(value)
    for name in _ONCE:
        if len(given.get(name, ())) > 1:
            raise BadRequest(f"the {name} parameter may be given once")
    try:
        window = _window(given)
        viewport = _viewport(given.get("viewport", [None])[0], max_viewport)
    except RenderError as exc:
        raise BadRequest(str(exc)) from None
    accept = ", ".join(given["accept"]) if "accept" in given else header_accept
    return RenderParameters(
        accept=accept,
        window=window,
        viewport=viewport,
        quality=_quality(given.get("quality", [None])[0]),
        annotation=() if thumbnail else _annotation(given.get("annotation", [])),
        overlays=_flag("overlays", given.get("overlays", [None])[0]),
        charset=given.get("charset", [None])[0],
    )


def choose_media_type(accept: str | None, allowed: Sequence[str], default: str) -> str:
    """The rendered media type to send: the best of `allowed` the Accept value (the
    `accept` parameter, else the header) admits; `default` for `*/*` and `image/*`."""
    items = parse_accept(accept)
    refused = {i.media_type for i in items if i.quality <= 0}
    for item in items:
        if item.quality <= 0:
            continue
        if item.media_type in _WILDCARDS:
            for candidate in (default, *allowed):
                if candidate not in refused:
                    return candidate
        if item.media_type in allowed:
            return item.media_type
    several = allowed == (GIF,)
    raise NotAcceptable(
        f"none of the accepted media types can be rendered; offered: {', '.join(allowed)}"
        + ("; several frames are rendered only as an animated GIF" if several else "")
    )


def _window(given: dict[str, list[str]]) -> Window | None:
    if "window" in given and "preset" in given:
        raise BadRequest("give either window or preset, not both")
    texts = given.get("window") or given.get("preset")
    if not texts:
        return None
    text = texts[0]
    values = [v.strip() for v in text.split(",")]
    if len(values) == 1 and not _is_number(values[0]):
        return _preset(values[0])
    if "preset" in given or len(values) not in (2, 3):
        raise BadRequest(f"window={text[:60]!r}: expected center,width[,function] or a preset name")
    try:
        center, width = float(values[0]), float(values[1])
    except ValueError:
        raise BadRequest(f"window={text[:60]!r}: center and width must be numbers") from None
    function = LINEAR
    if len(values) == 3:
        function = _FUNCTIONS.get(values[2].lower(), "")
        if not function:
            raise BadRequest(
                f"window function {values[2][:30]!r}: use linear, linear-exact or sigmoid"
            )
    return Window(center, width, function)


def _preset(name: str) -> Window:
    key = " ".join(name.lower().replace("-", " ").replace("_", " ").split())
    if key not in PRESETS:
        raise BadRequest(f"unknown window preset {name[:40]!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[key]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _viewport(text: str | None, max_side: int) -> Viewport | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",")]
    if len(values) not in (2, 6):
        raise BadRequest(f"viewport={text[:60]!r}: expected vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        width, height = int(values[0]), int(values[1])
        padded = [*values, "", "", "", ""]  # sx, sy, sw and sh may be left empty
        sx, sy = (float(v) if v else 0.0 for v in padded[2:4])
        sw, sh = (float(v) if v else None for v in padded[4:6])
    except ValueError:
        raise BadRequest(f"viewport={text[:60]!r}: the values must be numbers") from None
    if not (0 < width <= max_side and 0 < height <= max_side):
        raise BadRequest(f"the viewport's width and height must be within 1..{max_side}")
    if sw == 0 or sh == 0:
        raise BadRequest("the viewport's sw and sh must not be 0")
    return Viewport(width, height, sx, sy, sw, sh)


def _quality(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= 100:
        raise BadRequest(f"quality={text[:20]!r}: an integer from 1 to 100")
    return int(text)


def _annotation(values: list[str]) -> tuple[str, ...]:
    kinds: list[str] = []
    for value in values:
        for kind in (v.strip().lower() for v in value.split(",")):
            if kind not in KINDS:
                raise BadRequest(f"annotation {kind[:30]!r}: use patient and/or technique")
            if kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


def _flag(name: str, text: str | None) -> bool:
    if text is None:
        return False
    if text.lower() not in ("true", "false"):
        raise BadRequest(f"{name}={text[:20]!r}: true or false")
    return text.lower() == "true"
