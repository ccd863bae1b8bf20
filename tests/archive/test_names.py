"""The member name policy (docs/zip-format.md): key validation, neutralisation, de-duplication."""

from __future__ import annotations

import re
import unicodedata

import pytest

from service.archive.names import (
    MAX_SEGMENT_BYTES,
    UNNAMED,
    assign_names,
    content_disposition,
    name_key,
    safe_name,
    validate_key,
)
from service.constants import MAX_KEY_BYTES, MAX_NAME_BYTES
from service.exceptions import InvalidKey

# --- validate_key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "2025/01/05/MH12AB1234-083015.jpg",
        "a",
        "photo.jpg",
        ".hidden/x",
        "a/..b/c..",  # dots inside a segment are fine
        "é/日本/🚗.jpg",
        "a b/c d.jpg",
        "ab:c/d.jpg",  # a colon that is not a drive letter
        "x" * MAX_KEY_BYTES,
        "é" * (MAX_KEY_BYTES // 2),
    ],
)
def test_validate_key_accepts_and_returns_unchanged(key: str) -> None:
    assert validate_key(key) is key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_KEY_BYTES + 1), "bytes"),
        ("é" * (MAX_KEY_BYTES // 2) + "x", "bytes"),  # short in characters, long in UTF-8
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\x1fb", "U+001F"),
        ("a\x7fb", "U+007F"),
        ("a\x85b", "U+0085"),  # C1 (NEL)
        ("a\x9fb", "U+009F"),
        ("a\ud800b", "surrogate"),
        ("/abs/x", "slash"),
        ("\\abs\\x", "slash"),
        ("a\\b", "backslash"),
        ("C:/Windows/x", "drive"),
        ("c:x", "drive"),
        ("a:b/c.jpg", "drive"),
        ("../../etc/passwd", "'..'"),
        ("a/../b", "'..'"),
        ("a/..", "'..'"),
        ("./a", "'.'"),
        ("a/./b", "'.'"),
        ("a//b", "empty segment"),
        ("a/b/", "empty segment"),
    ],
)
def test_validate_key_rejects(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=re.escape(reason)) as caught:
        validate_key(key)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_key"


# --- safe_name -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        # already safe: unchanged
        ("2025/01/05/MH12AB1234-083015.jpg", "2025/01/05/MH12AB1234-083015.jpg"),
        (".bashrc", ".bashrc"),
        ("a b/c d.jpg", "a b/c d.jpg"),
        ("日本/🚗.jpg", "日本/🚗.jpg"),
        # climbing and absolute paths
        ("../../etc/passwd", "etc/passwd"),
        ("a/../../b", "a/b"),
        ("/abs/x", "abs/x"),
        ("//server/share/x", "server/share/x"),
        ("a/./b", "a/b"),
        ("a//b", "a/b"),
        ("a/b/", "a/b"),
        ("...", UNNAMED),
        ("a/.../b", "a/b"),
        (" ../x", "x"),
        # backslashes and drives
        ("C:\\Windows\\x", "Windows/x"),
        ("a\\b\\c.jpg", "a/b/c.jpg"),
        ("C:x.jpg", "x.jpg"),
        ("/C:/x", "x"),
        ("..\\..\\x", "x"),
        ("a/C:b", "a/C_b"),  # only a leading drive is a drive; later ":" are just unsafe
        # control and Windows-reserved characters
        ("a\x00b", "a_b"),
        ("a\tb\nc\x7fd\x85e", "a_b_c_d_e"),
        ('q<u>o:t"e|p?s*.jpg', "q_u_o_t_e_p_s_.jpg"),
        ("bad\ud800.jpg", "bad_.jpg"),
        # trailing dots and spaces, leading spaces
        ("name. ", "name"),
        ("name . .", "name"),
        ("  lead.jpg", "lead.jpg"),
        ("dir. /file.jpg .", "dir/file.jpg"),
        # Windows device names, any case, with extensions, superscript digits
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Con.", "_Con"),
        ("CON .txt", "_CON .txt"),
        ("NUL.tar.gz", "_NUL.tar.gz"),
        ("prn", "_prn"),
        ("aux.jpg", "_aux.jpg"),
        ("lpt1.jpg", "_lpt1.jpg"),
        ("COM9", "_COM9"),
        ("com0.x", "_com0.x"),
        ("LPT\u00b9", "_LPT\u00b9"),
        ("com\u00b3.txt", "_com\u00b3.txt"),
        ("CONOUT$", "_CONOUT$"),
        ("con/aux/nul.jpg", "_con/_aux/_nul.jpg"),
        # not device names
        ("console.txt", "console.txt"),
        ("com10", "com10"),
        ("lpt", "lpt"),
        ("x.con", "x.con"),
        ("_con", "_con"),
        # NFC
        ("e\u0301.jpg", "\u00e9.jpg"),
        ("Amélie/cafe\u0301", "Amélie/café"),
        # nothing left
        ("", UNNAMED),
        ("/", UNNAMED),
        ("..", UNNAMED),
        ("../..", UNNAMED),
        (" ", UNNAMED),
        ("C:", UNNAMED),
    ],
)
def test_safe_name(desired: str, expected: str) -> None:
    assert safe_name(desired) == expected


def _assert_safe(name: str) -> None:
    """What safe_name promises, checked independently of how it is done."""
    assert name
    assert name == unicodedata.normalize("NFC", name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert "\\" not in name
    assert not re.search('[\x00-\x1f\x7f-\x9f<>:"|?*]', name)
    for segment in name.split("/"):
        assert segment not in ("", ".", "..")
        assert not segment.startswith(" ")
        assert not segment.endswith((" ", "."))
        assert len(segment.encode("utf-8")) <= MAX_SEGMENT_BYTES
        assert segment.split(".")[0].rstrip(" ").casefold() not in {"con", "prn", "aux", "nul"}


@pytest.mark.parametrize(
    "desired",
    [
        "x" * 300 + ".jpg",
        "é" * 300 + ".jpg",  # 2-byte characters: 600 bytes
        "日" * 100 + ".jpeg",  # 3-byte characters
        "🚗" * 100,  # 4-byte characters, no extension
        "ab" + "é" * 200,  # odd offset: the cut would fall inside a character
        "e\u0301" * 150 + ".jpg",  # NFC makes these 2 bytes each
        "x" * 254 + " " + "y" * 10,  # cut lands right after a space
        "a" * 253 + "..... b",  # ...or inside a run of dots
        "x" * 300 + "." + "y" * 40,  # over-long "extension": cut as a plain name
        "/".join(["d" * 200] * 10) + "/f.jpg",  # 2 KB of directories
        "/".join(["é" * 200] * 10) + "/" + "f" * 300 + ".jpg",
        "../C:\\con\\..\\ x. /\x00",
    ],
)
def test_safe_name_invariants(desired: str) -> None:
    name = safe_name(desired)
    _assert_safe(name)
    assert safe_name(name) == name  # idempotent


@pytest.mark.parametrize(
    ("desired", "ext"),
    [("x" * 300 + ".jpg", ".jpg"), ("é" * 300 + ".jpg", ".jpg"), ("日" * 100 + ".jpeg", ".jpeg")],
)
def test_long_segment_keeps_extension_and_fills_the_limit(desired: str, ext: str) -> None:
    name = safe_name(desired)
    assert name.endswith(ext)
    size = len(name.encode("utf-8"))
    # As long as it can be without cutting a character: within one character of the limit.
    assert MAX_SEGMENT_BYTES - 3 <= size <= MAX_SEGMENT_BYTES
    assert desired.startswith(name[: -len(ext)])


def test_long_segment_without_extension_is_cut_on_a_character() -> None:
    name = safe_name("ab" + "é" * 200)
    assert name == "ab" + "é" * 126  # 254 bytes: one more "é" would be 256
    assert safe_name("🚗" * 100) == "🚗" * 63  # 252 bytes


def test_cut_does_not_separate_combining_marks_from_their_base() -> None:
    # U+0301 after "x" has no precomposed form, so NFC keeps the pair (3 bytes).
    name = safe_name("x\u0301" * 100)
    assert name == "x\u0301" * 85  # 255 bytes: whole pairs only
    name = safe_name("ab" + "x\u0301" * 100)  # 2 + 3k: the byte cut falls between x and its mark
    assert not unicodedata.category(name[-1]).startswith("L")
    assert name == "ab" + "x\u0301" * 84


def test_cut_without_extension_drops_what_windows_drops() -> None:
    assert safe_name("x" * 254 + " " + "y" * 10) == "x" * 254
    assert safe_name("a" * 253 + "..... b") == "a" * 253  # ". b" is no extension: a space


def test_over_long_name_keeps_file_name_and_leading_directories() -> None:
    directories = [f"d{i}" + "x" * 248 for i in range(10)]  # 250 bytes each
    name = safe_name("/".join([*directories, "photo.jpg"]))
    # 4 directories (1004 bytes with separators) + "photo.jpg" fit in 1024; a 5th does not.
    assert name == "/".join([*directories[:4], "photo.jpg"])


# --- name_key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [("A.jpg", "a.JPG"), ("e\u0301", "\u00e9"), ("É", "e\u0301"), ("STRASSE", "straße"), ("Dir/X", "dir/x")],
)
def test_name_key_equates(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


# --- plan_names / assign_names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        pytest.param(["a.jpg", "b.jpg"], ["a.jpg", "b.jpg"], id="unique"),
        pytest.param(["x.jpg", "x.jpg", "x.jpg"], ["x.jpg", "x (1).jpg", "x (2).jpg"], id="exact-dup"),
        pytest.param(["A.jpg", "a.JPG"], ["A.jpg", "a (1).JPG"], id="case-dup"),
        pytest.param(["e\u0301.jpg", "\u00e9.jpg"], ["\u00e9.jpg", "\u00e9 (1).jpg"], id="nfd-vs-nfc"),
        pytest.param(["STRASSE", "straße"], ["STRASSE", "straße (1)"], id="casefold"),
        pytest.param(
            ["x.jpg", "x.jpg", "x (1).jpg"], ["x.jpg", "x (2).jpg", "x (1).jpg"], id="later-original-kept"
        ),
        pytest.param(
            ["x.jpg", "X.jpg", "x (1).JPG", "x (2).jpg"],
            ["x.jpg", "X (3).jpg", "x (1).JPG", "x (2).jpg"],
            id="later-originals-case-insensitive",
        ),
        pytest.param(
            ["x (1).jpg", "x.jpg", "x.jpg"], ["x (1).jpg", "x.jpg", "x (2).jpg"], id="earlier-original"
        ),
        pytest.param(["x (1).jpg", "x (1).jpg"], ["x (1).jpg", "x (1) (1).jpg"], id="dup-of-numbered"),
        pytest.param(["noext", "NOEXT"], ["noext", "NOEXT (1)"], id="no-extension"),
        pytest.param([".bashrc", ".bashrc"], [".bashrc", ".bashrc (1)"], id="hidden-file"),
        pytest.param(["t.tar.gz", "t.tar.gz"], ["t.tar.gz", "t.tar (1).gz"], id="last-suffix"),
        pytest.param(["Mr. Smith", "mr. smith"], ["Mr. Smith", "mr. smith (1)"], id="dot-then-space"),
        pytest.param(["", "..", "/"], [UNNAMED, "unnamed (1)", "unnamed (2)"], id="unnamed"),
        pytest.param(["../a.jpg", "a.jpg"], ["a.jpg", "a (1).jpg"], id="neutralised-dup"),
        pytest.param(["d/a.jpg", "D/A.JPG", "d/b.jpg"], ["d/a.jpg", "D/A (1).JPG", "d/b.jpg"], id="dir-case"),
        pytest.param(["d1/a.jpg", "d2/a.jpg"], ["d1/a.jpg", "d2/a.jpg"], id="same-file-other-dir"),
        # file/directory clashes: the file yields, wherever it is
        pytest.param(["a/b", "a/b/c.jpg"], ["a/b (1)", "a/b/c.jpg"], id="file-then-dir"),
        pytest.param(["a/b/c.jpg", "a/b"], ["a/b/c.jpg", "a/b (1)"], id="dir-then-file"),
        pytest.param(
            ["A/B", "a/b/c.jpg", "a/b/d.jpg"], ["A/B (1)", "a/b/c.jpg", "a/b/d.jpg"], id="clash-case"
        ),
        pytest.param(["a", "a/b/c"], ["a (1)", "a/b/c"], id="clash-deep"),
        pytest.param(
            ["a.jpg", "a.jpg/x", "a (1).jpg/y"],
            ["a (2).jpg", "a.jpg/x", "a (1).jpg/y"],
            id="clash-skips-dirs",
        ),
        pytest.param(["a", "a", "a/x"], ["a (1)", "a (2)", "a/x"], id="clash-and-dup"),
    ],
)
def test_assign_names(desired: list[str], expected: list[str]) -> None:
    assert assign_names(desired) == expected


def _assert_valid_plan(names: list[str] | tuple[str, ...]) -> None:
    keys = [name_key(n) for n in names]
    assert len(set(keys)) == len(keys), "case-insensitive duplicate"
    files = set(keys)
    for key in keys:
        parts = key.split("/")
        for i in range(1, len(parts)):
            assert "/".join(parts[:i]) not in files, f"{key} is under a file"
    for name in names:
        _assert_safe(name)


MESSY = [
    "A.jpg",
    "a.JPG",
    "x (1).jpg",
    "x.jpg",
    "X.JPG",
    "a/b",
    "a/b/c.jpg",
    "A/B/C.JPG",
    "e\u0301",
    "\u00e9",
    "../../etc/passwd",
    "etc/passwd",
    "CON",
    "_CON",
    "con.txt",
    "",
    "unnamed",
    "é" * 300 + ".jpg",
    "é" * 300 + ".JPG",
    "é" * 301 + ".jpg",
    "/".join(["d" * 250] * 4) + "/" + "f" * 250,
    "/".join(["d" * 250] * 4) + "/" + "F" * 250,
    "/".join(["d" * 250] * 4) + "/" + "f" * 250 + "/g",
]


def test_messy_plan_is_valid() -> None:
    _assert_valid_plan(assign_names(MESSY))


def test_deterministic_and_stable() -> None:
    first = assign_names(MESSY)
    assert assign_names(list(MESSY)) == first  # same input, same output
    assert assign_names(iter(MESSY)) == first  # any iterable
    assert assign_names(first) == first  # names assigned again are unchanged


def test_long_names_stay_within_limits_when_numbered() -> None:
    long_file = "é" * 300 + ".jpg"
    names = assign_names([long_file] * 12)
    _assert_valid_plan(names)
    assert names[11].endswith(" (11).jpg")
    deep = "/".join(["d" * 254] * 4) + "/" + "f" * 250  # 1020 + 250 bytes: the file keeps 3 dirs
    names = assign_names([deep, deep])
    _assert_valid_plan(names)
    assert names[1].endswith(" (1)")


def test_many_duplicates_are_fast_and_unique() -> None:
    names = assign_names(["photo.jpg"] * 20_000)
    assert names[-1] == "photo (19999).jpg"
    assert len(set(names)) == 20_000


def test_names_in_order_and_nfc() -> None:
    assert assign_names(["a.jpg", "A.jpg", "ok.jpg", "../x", "e\u0301"]) == [
        "a.jpg",
        "A (1).jpg",
        "ok.jpg",
        "x",
        "\u00e9",
    ]


def test_no_names() -> None:
    assert assign_names([]) == []


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        ("photo\u202egpj.exe", "photo_gpj.exe"),  # right-to-left override: shows "photoexe.jpg"
        ("a\u2066b\u2069.jpg", "a_b_.jpg"),  # isolates
        ("zero\u200bwidth.jpg", "zero_width.jpg"),
        ("soft\u00adhyphen.jpg", "soft_hyphen.jpg"),
        ("bom\ufeff.jpg", "bom_.jpg"),
        ("line\u2028sep.jpg", "line_sep.jpg"),
        ("क्\u200dष.jpg", "क्\u200dष.jpg"),  # ZWJ shapes Devanagari: kept
        ("👨\u200d👩\u200d👧.jpg", "👨\u200d👩\u200d👧.jpg"),  # and emoji sequences
    ],
)
def test_invisible_and_bidirectional_characters_are_neutralised(desired: str, expected: str) -> None:
    assert safe_name(desired) == expected


def test_the_download_name_loses_bidirectional_overrides() -> None:
    value = content_disposition("report\u202egpj.zip")
    assert "\u202e" not in value and "%E2%80%AE" not in value


# --- content_disposition -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fallback", "encoded"),
    [
        (
            "photos-2025-01-01_2025-01-05.zip",
            "photos-2025-01-01_2025-01-05.zip",
            "photos-2025-01-01_2025-01-05.zip",
        ),
        # The fallback keeps what ASCII can spell: accents go (NFKD), the letter stays.
        ("café.zip", "cafe.zip", "caf%C3%A9.zip"),
        ("cafe\u0301.zip", "cafe.zip", "caf%C3%A9.zip"),  # NFC first
        ("日本.zip", "__.zip", "%E6%97%A5%E6%9C%AC.zip"),
        ('say "hi".zip', "say hi.zip", "say%20%22hi%22.zip"),
        ("a\\b.zip", "a_b.zip", "a_b.zip"),
        ("a/b.zip", "a_b.zip", "a_b.zip"),
        ("a\r\nSet-Cookie: x.zip", "aSet-Cookie: x.zip", "aSet-Cookie%3A%20x.zip"),
        ("100%.zip", "100_.zip", "100%25.zip"),
        ("semi;colon,comma.zip", "semi;colon,comma.zip", "semi%3Bcolon%2Ccomma.zip"),
        ("'quote'.zip", "'quote'.zip", "%27quote%27.zip"),
        ('"".zip', "download.zip", "%22%22.zip"),
        ("", "download", "download"),
        ("\x00", "download", "download"),
        ("🚗 photos.zip", "_ photos.zip", "%F0%9F%9A%97%20photos.zip"),
    ],
)
def test_content_disposition(filename: str, fallback: str, encoded: str) -> None:
    value = content_disposition(filename)
    assert value == f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    assert value.isascii()
    assert not re.search("[\x00-\x1f\x7f]", value)


@pytest.mark.parametrize(
    ("filename", "fallback"),
    [
        # one "_" per letter ASCII cannot spell (its vowel signs and viramas are marks, and
        # go with it), the Devanagari seven is a 7, the accent leaves "cafe", the emoji is "_"
        ("गेट-७ रिपोर्ट café 📷.zip", "__-7 ____ cafe _.zip"),
        ("Łódź Straße Ærø.zip", "Lodz Strasse AEro.zip"),  # no decomposition: spelt out
        ("ﬁle①２.zip", "file12.zip"),  # compatibility forms (NFKD)
        ("٢٠٢٥-01.zip", "2025-01.zip"),  # any script's decimal digits
        ("👍🏽 ok\ufe0f.zip", "__ ok.zip"),  # the skin tone is a symbol, the selector a mark
        ("👨\u200d👩\u200d👧.zip", "___.zip"),  # ZWJ is invisible: dropped
        ("\u3000wide\uff0fslash\uff05.zip", "wide_slash_.zip"),  # NFKD may give " ", "/", "%"
        ("\uff02quoted\uff02.zip", "quoted.zip"),  # and '"'
        ("日本.zip", "__.zip"),
    ],
)
def test_the_ascii_fallback_keeps_what_it_can(filename: str, fallback: str) -> None:
    value = content_disposition(filename)
    assert value.startswith(f'attachment; filename="{fallback}"; '), value
    assert value.isascii()


@pytest.mark.parametrize("filename", ["x.zip", "日本.zip", '"\\".zip', "a\x00.zip", "é" * 50 + ".zip"])
def test_content_disposition_fallback_keeps_zip_suffix(filename: str) -> None:
    fallback = re.search('filename="([^"]*)"', content_disposition(filename))
    assert fallback is not None
    assert fallback.group(1).endswith(".zip")
    assert fallback.group(1) != ".zip"
