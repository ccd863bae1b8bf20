"""`zipedge demo`: realistic demo photos for the embedded default source.

Writes what a gate camera would store: one JPEG per passing vehicle under
`<root>/YYYY/MM/DD/<PLATE>-<HHMMSS>.jpg`, a real 640x480 image with a number plate and a
timestamp caption, whose mtime is its capture time (UTC).

Everything is derived from the seed and the day, never from the order of runs, so the
same day always gets the same files with the same bytes: re-running is idempotent, and
archives of demo data get the same ids on every machine with the same Pillow/libjpeg.
The clock only decides which of today's photos exist yet: a photo is written once its
capture time has passed, so no mtime (and no archive's `Last-Modified`) lies in the
future, and a later run adds the rest of the day.

`write_example_photos` writes the fixed days the README's examples use
(`EXAMPLE_DAYS`), with the photos its posted example names (`EXAMPLE_PHOTOS`).
"""

from __future__ import annotations

import calendar
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "EXAMPLE_DAYS",
    "EXAMPLE_KEY",
    "EXAMPLE_PHOTOS",
    "DemoPhoto",
    "demo_photos",
    "render_photo",
    "write_demo_photos",
    "write_example_photos",
]

WIDTH, HEIGHT = 640, 480
#: ~40-80 KB per photo at this size: big enough to behave like real photos in benchmarks.
JPEG_QUALITY = 80

# Common state codes; series letters skip I and O, as on real plates (they read as 1 and 0).
_STATES = ("MH", "DL", "KA", "TN", "GJ", "UP", "RJ", "HR", "WB", "TS", "KL", "PB", "AP", "MP")
_SERIES_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
# Noise is drawn at a quarter of the size and scaled up: full-size noise would make
# 200 KB files and cost most of the run in random numbers.
_NOISE_SCALE = 4

_FontT = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True, slots=True)
class DemoPhoto:
    """One demo photo: its key relative to the root and its capture time (UTC)."""

    plate: str
    taken_at: datetime

    @property
    def key(self) -> str:
        t = self.taken_at
        return f"{t.year:04d}/{t.month:02d}/{t.day:02d}/{self.plate}-{t:%H%M%S}.jpg"

    @property
    def mtime(self) -> int:
        return calendar.timegm(self.taken_at.utctimetuple())


def demo_photos(day: date, per_day: int, *, seed: int = 7) -> list[DemoPhoto]:
    """The photos of one UTC day, in capture order. Photo i of a day does not depend on
    `per_day` (barring a name clash), so asking for more photos only adds some."""
    # A str seed is hashed with SHA-512 by `random`, so it is stable across processes.
    rng = random.Random(f"zipedge-demo:{seed}:{day.isoformat()}")
    midnight = datetime.combine(day, time(), tzinfo=UTC)
    photos: dict[str, DemoPhoto] = {}
    while len(photos) < per_day:
        photo = DemoPhoto(_plate(rng), midnight + timedelta(seconds=rng.randrange(86_400)))
        photos.setdefault(photo.key, photo)  # a repeated plate and second is simply redrawn
    return sorted(photos.values(), key=lambda p: (p.taken_at, p.plate))


def write_demo_photos(
    root: Path,
    *,
    days: int = 5,
    per_day: int = 40,
    end: date | None = None,
    seed: int = 7,
    now: datetime | None = None,
    extra: Iterable[DemoPhoto] = (),
) -> int:
    """Write `per_day` photos for each of the `days` UTC days ending at `end` (default:
    today, UTC), and the `extra` photos, under `root`; return the number of files written.

    A photo taken after `now` (default: the current time) is not written yet, so today's
    day has only the photos taken so far. A file that already exists with its capture time
    as mtime is left alone (a previous run wrote it; the bytes would be identical). Files
    are written to a temporary name, given their mtime, then renamed, so a service listing
    the folder meanwhile never sees a partial photo or a transient mtime.
    """
    if days < 1 or per_day < 0:
        raise ValueError(f"days must be >= 1 and per_day >= 0, not {days} and {per_day}")
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    last = end if end is not None else now.date()
    photos = [
        photo
        for offset in range(days - 1, -1, -1)
        for photo in demo_photos(last - timedelta(days=offset), per_day, seed=seed)
    ]
    return _write(root, [*photos, *extra], seed=seed, now=now)


#: The UTC days the README's examples use, first and last; `write_example_photos`
#: writes them whatever today is.
EXAMPLE_DAYS = (date(2025, 1, 1), date(2025, 1, 5))
#: The photos the README's posted example names (its first is the README's key example).
EXAMPLE_PHOTOS = (
    DemoPhoto("MH12AB1234", datetime(2025, 1, 5, 8, 30, 15, tzinfo=UTC)),
    DemoPhoto("KA03MX0042", datetime(2025, 1, 4, 17, 15, 2, tzinfo=UTC)),
)
EXAMPLE_KEY = EXAMPLE_PHOTOS[0].key  #: "2025/01/05/MH12AB1234-083015.jpg"


def write_example_photos(root: Path, *, per_day: int = 40, seed: int = 7) -> int:
    """The demo photos of `EXAMPLE_DAYS`, plus `EXAMPLE_PHOTOS`; the number written."""
    first, last = EXAMPLE_DAYS
    return write_demo_photos(
        root, days=(last - first).days + 1, per_day=per_day, end=last, seed=seed, extra=EXAMPLE_PHOTOS
    )


def _write(root: Path, photos: Iterable[DemoPhoto], *, seed: int, now: datetime) -> int:
    fonts = _Fonts.load()
    written = 0
    seen: set[str] = set()
    for photo in photos:
        if photo.taken_at > now or photo.key in seen:
            continue
        seen.add(photo.key)
        path = root / photo.key
        try:
            if int(path.stat().st_mtime) == photo.mtime:
                continue
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        render_photo(photo, seed=seed, fonts=fonts).save(tmp, "JPEG", quality=JPEG_QUALITY, optimize=True)
        os.utime(tmp, (photo.mtime, photo.mtime))
        os.replace(tmp, path)
        written += 1
    return written


@dataclass(frozen=True, slots=True)
class _Fonts:
    plate: _FontT
    caption: _FontT

    @classmethod
    def load(cls) -> _Fonts:
        # Pillow's bundled default font scales when FreeType is there; without it the
        # tiny bitmap font still gives a legible image.
        try:
            return cls(ImageFont.load_default(size=34), ImageFont.load_default(size=18))
        except (ImportError, OSError):
            fallback = ImageFont.load_default()
            return cls(fallback, fallback)


def render_photo(photo: DemoPhoto, *, seed: int = 7, fonts: _Fonts | None = None) -> Image.Image:
    """A deterministic 640x480 RGB picture of a car front with `photo.plate` on its plate."""
    fonts = fonts or _Fonts.load()
    rng = random.Random(f"zipedge-demo-image:{seed}:{photo.key}")

    # Background: a vertical sky-to-road gradient with a random tint, plus soft noise.
    top = tuple(rng.randrange(90, 200) for _ in range(3))
    bottom = tuple(rng.randrange(30, 90) for _ in range(3))
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    image = Image.composite(
        Image.new("RGB", (WIDTH, HEIGHT), bottom), Image.new("RGB", (WIDTH, HEIGHT), top), gradient
    )
    small = (WIDTH // _NOISE_SCALE, HEIGHT // _NOISE_SCALE)
    noise = Image.frombytes("L", small, rng.randbytes(small[0] * small[1])).resize(
        (WIDTH, HEIGHT), Image.Resampling.BILINEAR
    )
    image = Image.blend(image, Image.merge("RGB", (noise, noise, noise)), 0.18)

    draw = ImageDraw.Draw(image)
    # The car: a body, a windscreen and headlights, placed a little differently each time.
    dx, dy = rng.randrange(-60, 61), rng.randrange(-20, 21)
    body = tuple(rng.randrange(20, 230) for _ in range(3))
    draw.rounded_rectangle((130 + dx, 150 + dy, 510 + dx, 400 + dy), radius=40, fill=body)
    draw.polygon(
        [(190 + dx, 160 + dy), (450 + dx, 160 + dy), (420 + dx, 230 + dy), (220 + dx, 230 + dy)],
        fill=(40, 55, 70),
    )
    for x in (160, 430):
        draw.ellipse((x + dx, 260 + dy, x + 50 + dx, 295 + dy), fill=(250, 245, 200))

    # The plate: white with a black border and the registration in black.
    plate_box = (190 + dx, 318 + dy, 450 + dx, 372 + dy)
    draw.rectangle(plate_box, fill=(245, 245, 240), outline=(10, 10, 10), width=4)
    draw.text(
        ((plate_box[0] + plate_box[2]) / 2, (plate_box[1] + plate_box[3]) / 2),
        photo.plate,
        fill=(10, 10, 10),
        font=fonts.plate,
        anchor="mm",
    )

    # The camera's caption bar.
    draw.rectangle((0, HEIGHT - 34, WIDTH, HEIGHT), fill=(0, 0, 0))
    caption = f"GATE {rng.randrange(1, 5)}   {photo.taken_at:%Y-%m-%d %H:%M:%S} UTC   {photo.plate}"
    draw.text((12, HEIGHT - 17), caption, fill=(255, 255, 255), font=fonts.caption, anchor="lm")
    return image


def _plate(rng: random.Random) -> str:
    """An Indian-style registration: state, RTO district, series, number ("MH12AB1234")."""
    state = rng.choice(_STATES)
    district = rng.randrange(1, 51)
    series = "".join(rng.choice(_SERIES_LETTERS) for _ in range(rng.choice((1, 2, 2, 2))))
    return f"{state}{district:02d}{series}{rng.randrange(1, 10_000):04d}"
