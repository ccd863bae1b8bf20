"""Archive member names: which keys callers may send, and what names go into a ZIP.

Two directions, on purpose (docs/zip-format.md, "Names"):

* `validate_key` *rejects* odd object keys sent by callers (400 `invalid_key`). A key
  addresses an object in the source; guessing what a caller meant by `a/../b` would
  be a path-traversal hole, so nothing is repaired there.
* `safe_name` *neutralises* a desired member name (a key, or a caller's "name") into a
  relative path every unzip tool extracts inside its target folder, on Windows too.
  `plan_names` then makes the names of one archive unique, case-insensitively and
  without a file that is also a directory, deterministically.

`content_disposition` builds the RFC 6266 header for the archive itself.

Pure logic: standard library only, no IO.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

from service.constants import MAX_KEY_BYTES, MAX_NAME_BYTES
from service.exceptions import InvalidKey

__all__ = [
    "MAX_SEGMENT_BYTES",
    "UNNAMED",
    "assign_names",
    "content_disposition",
    "name_key",
    "safe_name",
    "validate_key",
]

#: Longest path segment (bytes of UTF-8): the file-name limit of ext4, NTFS (255 UTF-16
#: units, which 255 UTF-8 bytes never exceed), APFS and most unzip tools.
MAX_SEGMENT_BYTES = 255

#: The name given to a member whose desired name neutralises to nothing.
UNNAMED = "unnamed"

#: Longest suffix (dot included, UTF-8 bytes) still treated as an extension, i.e. kept when
#: a segment is truncated and kept after the " (n)" of a renamed duplicate. Longer tails,
#: or tails with a space ("Mr. Smith"), are part of the stem.
_MAX_EXT_BYTES = 32

# C0, DEL and C1 controls: NUL ends a C string in unzip tools, the others spoof terminals.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Lone surrogates cannot be encoded as UTF-8 (JSON bodies can still carry them).
_SURROGATE = re.compile("[\ud800-\udfff]")
# Invisible format characters (Unicode category Cf) and line/paragraph separators: the
# bidirectional overrides and isolates (U+202A-202E, U+2066-2069) make "photo\u202egpj.exe"
# display as "photoexe.jpg"; zero-width and soft-hyphen characters make two names look
# alike. ZWNJ and ZWJ (U+200C, U+200D) are kept: scripts and emoji sequences need them.
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# Everything replaced by "_" in a member name: controls, surrogates, invisible format
# characters, and those Windows forbids in file names ("/" and "\\" are separators,
# handled before).
_UNSAFE = re.compile(f'[\x00-\x1f\x7f-\x9f\ud800-\udfff{_INVISIBLE}<>:"|?*]')
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
_DRIVE = re.compile("[A-Za-z]:")

# Windows device names: a file called "con.txt" or "NUL.tar.gz" opens the device instead.
# The superscript digits are honoured by Windows as well; CONIN$/CONOUT$ too since NT.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{dev}{digit}" for dev in ("com", "lpt") for digit in "0123456789\u00b9\u00b2\u00b3"}
)

# RFC 5987 attr-char: the bytes a `filename*` value may carry without percent-encoding.
_ATTR_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~")


# --- keys sent by callers ------------------------------------------------------------------


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is an acceptable object key relative to the source
    root; raise `InvalidKey` saying why not otherwise."""
    if not key:
        raise InvalidKey("key is empty")
    if _SURROGATE.search(key):
        raise InvalidKey("key is not valid Unicode (lone surrogate)")
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"key is {size} bytes long; the limit is {MAX_KEY_BYTES} bytes of UTF-8")
    control = _CONTROL.search(key)
    if control:
        raise InvalidKey(f"key contains the control character U+{ord(control.group()):04X}")
    if key[0] in "/\\":
        raise InvalidKey("key must be relative to the source root (it starts with a slash)")
    if "\\" in key:
        raise InvalidKey("key contains a backslash; use '/' between segments")
    if _DRIVE.match(key):
        raise InvalidKey("key starts with a drive letter")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey("key has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise InvalidKey(f"key has a '{segment}' segment")
    return key


# --- one member name ---------------------------------------------------------------------


def name_key(name: str) -> str:
    """The comparison key of a member name: two names with the same key are the same file
    on Windows and macOS (canonically equivalent, case-insensitive)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def safe_name(name: str) -> str:
    """Neutralise one desired member name into a safe relative path (see module doc).

    NFC; "\\" counts as "/"; empty, "." and ".." segments and a leading drive ("C:") are
    dropped; controls and `<>:"|?*` become "_"; leading spaces and trailing dots/spaces
    of each segment go; Windows device names get a "_" prefix; each segment is cut to
    `MAX_SEGMENT_BYTES` keeping its extension, the whole to `MAX_NAME_BYTES` keeping the
    file name; nothing left gives `UNNAMED`. Idempotent: `safe_name(safe_name(x)) ==
    safe_name(x)`.
    """
    text = unicodedata.normalize("NFC", _SURROGATE.sub("_", name)).replace("\\", "/")
    segments: list[str] = []
    for raw in text.split("/"):
        if not segments:
            # A drive only means something at the start ("C:\\x", "/C:/x", "C:x").
            raw = raw[2:] if _DRIVE.match(raw) else raw
        segment = _safe_segment(raw)
        if segment:
            segments.append(segment)
    if not segments:
        return UNNAMED
    return _fit_path(segments[:-1], segments[-1])


def _safe_segment(raw: str) -> str:
    # Stripping trailing dots also disposes of "." and ".." (and "...", which Windows
    # would turn into ".."): none of them can survive as a segment.
    segment = _UNSAFE.sub("_", raw).lstrip(" ").rstrip(". ")
    if not segment:
        return ""
    if _is_reserved(segment):
        segment = "_" + segment
    return _fit_segment(segment, MAX_SEGMENT_BYTES)


def _is_reserved(segment: str) -> bool:
    # "con.txt", "NUL.tar.gz" and "CON .txt" all open the device on Windows.
    return segment.split(".", 1)[0].rstrip(" ").casefold() in _RESERVED


def _split_ext(segment: str) -> tuple[str, str]:
    """(stem, extension): the extension is the last dot-suffix, at most `_MAX_EXT_BYTES`
    and without spaces. Hidden files (".bashrc", "..x") have none."""
    dot = segment.rfind(".")
    if dot <= 0 or not segment[:dot].strip("."):
        return segment, ""
    ext = segment[dot:]
    if len(ext) < 2 or " " in ext or len(ext.encode("utf-8")) > _MAX_EXT_BYTES:
        return segment, ""
    return segment[:dot], ext


def _truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of `text` of at most `limit` UTF-8 bytes, never cutting a
    character in half nor separating a base character from its combining marks."""
    if len(text.encode("utf-8")) <= limit:
        return text
    # Decoding a byte prefix with errors="ignore" drops only the trailing partial sequence.
    cut = text.encode("utf-8")[: max(limit, 0)].decode("utf-8", errors="ignore")
    whole = cut
    while whole and unicodedata.category(text[len(whole)]).startswith("M"):
        whole = whole[:-1]
    # A run of marks longer than the limit has no clean cut; keep the raw one then.
    return whole or cut


def _fit_segment(segment: str, limit: int) -> str:
    if len(segment.encode("utf-8")) <= limit:
        return segment
    stem, ext = _split_ext(segment)
    # Without an extension the cut becomes the end of the name: re-strip what Windows drops.
    return _truncate_utf8(stem, limit - len(ext.encode("utf-8"))).rstrip(" " if ext else ". ") + ext


def _fit_path(parents: Sequence[str], last: str) -> str:
    """Join `parents` and `last` within `MAX_NAME_BYTES`, keeping the file name and as
    many leading directories as fit. Stops at the first directory that does not fit, so
    the directories kept are always a prefix of the original ones."""
    budget = MAX_NAME_BYTES - len(last.encode("utf-8"))
    kept: list[str] = []
    for parent in parents:
        cost = len(parent.encode("utf-8")) + 1
        if cost > budget:
            break
        kept.append(parent)
        budget -= cost
    kept.append(last)
    return "/".join(kept)


# --- all the names of one archive ---------------------------------------------------------


def assign_names(desired: Iterable[str]) -> list[str]:
    """Turn the desired names of a manifest, in order, into unique safe member names.

    The rule, deterministic and stable (same input, same output; a plan's output planned
    again is unchanged):

    1. Every name goes through `safe_name`; names are compared by `name_key` (NFC +
       casefold), because Windows and macOS extract "A.jpg" and "a.JPG" to one file.
    2. Every directory implied by any name ("a/b" for "a/b/c.jpg") is a directory, full
       stop: a member whose name is such a directory is a file/directory clash and is
       renamed, wherever it sits in the order (renaming one file beats moving a folder).
    3. First pass: the first occurrence of each name keeps it, unless rule 2 applies, so
       every name that was already unique is reserved before anything is renamed.
    4. Second pass, in input order: each remaining member becomes "stem (n).ext" (the
       extension is the last suffix, "a.tar (1).gz"; none for ".bashrc" → ".bashrc (1)")
       with the smallest n >= 1 whose name is neither taken by any reserved or already
       renamed member nor a directory. A later original "x (1).jpg" is therefore never
       taken from it: the duplicate of "x.jpg" becomes "x (2).jpg".

    Renaming only changes the last segment, so the set of directories never changes.
    """
    wanted = list(desired)
    safe = [safe_name(name) for name in wanted]
    keys = [name_key(name) for name in safe]
    # name_key maps "/" to itself and nothing composes across it, so the key of a
    # directory is a prefix of the key of the name.
    directories = {key[:i] for key in keys for i, char in enumerate(key) if char == "/"}

    final: list[str | None] = [None] * len(safe)
    taken: set[str] = set()
    for index, (name, key) in enumerate(zip(safe, keys, strict=True)):
        if key not in taken and key not in directories:
            taken.add(key)
            final[index] = name

    # Next n to try per name key: the names tried before stay taken, so a long run of
    # duplicates costs O(n), not O(n²).
    next_n: dict[str, int] = {}
    for index, (name, key) in enumerate(zip(safe, keys, strict=True)):
        if final[index] is None:
            final[index] = _next_free(name, key, taken, directories, next_n)

    return [name for name in final if name is not None]


def _next_free(name: str, key: str, taken: set[str], directories: set[str], next_n: dict[str, int]) -> str:
    *parents, last = name.split("/")
    stem, ext = _split_ext(last)
    n = next_n.get(key, 1)
    while True:
        candidate = _fit_path(parents, _numbered(stem, ext, n))
        candidate_key = name_key(candidate)
        n += 1
        if candidate_key not in taken and candidate_key not in directories:
            next_n[key] = n
            taken.add(candidate_key)
            return candidate


def _numbered(stem: str, ext: str, n: int) -> str:
    suffix = f" ({n})"
    budget = MAX_SEGMENT_BYTES - len(suffix) - len(ext.encode("utf-8"))
    return _truncate_utf8(stem, budget) + suffix + ext


# --- the archive's own file name -----------------------------------------------------------


@functools.lru_cache(maxsize=1024)  # asked again for every redirect to the same archive
def content_disposition(filename: str) -> str:
    """An RFC 6266 `Content-Disposition: attachment` value for `filename`: a quoted ASCII
    fallback for old clients and the exact name as RFC 5987 `filename*`."""
    clean = unicodedata.normalize("NFC", _SURROGATE.sub("_", filename))
    # A download name is one file name: no controls, no directories.
    clean = _INVISIBLE_RE.sub("", _CONTROL.sub("", clean))
    clean = clean.replace("/", "_").replace("\\", "_").strip(" ") or "download"
    encoded = "".join(chr(b) if b in _ATTR_CHARS else f"%{b:02X}" for b in clean.encode("utf-8"))
    return f"attachment; filename=\"{_ascii_fallback(clean)}\"; filename*=UTF-8''{encoded}"


#: Latin letters that have no decomposition, spelt as ASCII (German, Nordic, Polish,
#: Croatian, Icelandic, Turkish); everything else non-ASCII is decomposed or replaced.
_LATIN_SPELLINGS = str.maketrans(
    {
        "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i",
    }
)  # fmt: skip


def _ascii_fallback(clean: str) -> str:
    """The quoted `filename` for clients that ignore `filename*` (curl -J, old browsers):
    what can be spelt in ASCII is kept, one "_" stands for each character that cannot.

    NFKD first (compatibility forms: "é" → "e" + accent, "ﬁ" → "fi", "１" → "1"), then per
    character: combining marks and other invisible format characters (ZWJ) are dropped,
    since they only ever modify the character before them, which is kept or replaced on its
    own; a decimal digit of any script is its ASCII digit ("७" → "7"); the few Latin letters
    without a decomposition get their usual spelling ("ß" → "ss"); printable ASCII stays,
    except '"' (it would end the quoted-string: dropped) and "%", "\\", "/" (percent-decoded
    by some browsers, or a path: "_"); anything else is "_".
    """
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", clean.translate(_LATIN_SPELLINGS)):
        if " " <= char <= "~":
            if char != '"':
                out.append("_" if char in "%\\/" else char)
        elif unicodedata.category(char) in ("Mn", "Mc", "Me", "Cf"):
            continue
        elif unicodedata.decimal(char, None) is not None:
            out.append(str(unicodedata.decimal(char)))
        else:
            out.append("_")
    text = "".join(out).strip(" ")
    stem, dot, ext = text.rpartition(".")
    if dot and not stem:
        return "download." + ext  # '"".zip' would otherwise become a hidden ".zip"
    return text or "download"
