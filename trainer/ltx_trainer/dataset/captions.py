"""Caption files: the text each clip is trained with.

Captions are UTF-8 (a byte-order mark is allowed, UTF-16 with its mark too). Anything
else is read as Windows-1252, the legacy encoding most other caption files are in
(latin-1 is its subset, save five bytes Windows-1252 leaves undefined, which are read
as latin-1), and the manifest says so. NULs are dropped, whitespace is collapsed, and
the caption with its trigger phrase is held to the text limit every spec text obeys.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from ltx_contract.spec import MAX_TEXT_LENGTH

LEGACY_ENCODING = "cp1252"
#: Read no further than this: past it a caption is far over the limit anyway.
READ_LIMIT_BYTES = 1 << 20
_LATIN1_FALLBACK = "ltx-latin1-fallback"


def _latin1_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    return error.object[error.start:error.end].decode("latin-1"), error.end


codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)


@dataclass(frozen=True)
class Caption:
    text: str
    warnings: tuple[str, ...] = ()
    #: False when the clip had no caption or an empty one (it trains on the trigger alone)
    described: bool = True


def _decode(raw: bytes, complete: bool) -> tuple[str, bool]:
    """(text, whether it was read in the legacy encoding)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), False
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:  # incremental: a cut through the last character is not an encoding error
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=complete), False
    except UnicodeDecodeError:
        return raw.decode(LEGACY_ENCODING, errors=_LATIN1_FALLBACK), True


def read_caption(path: Path | None, name: str, trigger_phrase: str | None) -> Caption:
    """The caption of one clip; `name` is the caption file's path inside the archive,
    `path` None when the clip has no caption file (the trigger phrase alone)."""
    trigger = trigger_phrase or ""
    if path is None:
        return Caption(trigger, described=False)
    with path.open("rb") as source:
        raw = source.read(READ_LIMIT_BYTES + 1)
    complete = len(raw) <= READ_LIMIT_BYTES
    text, legacy = _decode(raw[:READ_LIMIT_BYTES], complete)
    warnings = []
    if legacy:
        warnings.append(f"caption {name} is not valid UTF-8: it was read as Windows-1252 "
                        f"({LEGACY_ENCODING}); save captions as UTF-8 if any character "
                        "looks wrong")
    if "\0" in text:
        text = text.replace("\0", "")
        warnings.append(f"caption {name} holds NUL characters: they were removed")
    text = " ".join(text.split())
    if not text:
        warnings.append(f"caption {name} is empty: the clip is trained with "
                        + ("the trigger phrase alone" if trigger else "no caption"))
    caption = f"{trigger} {text}".strip() if trigger else text
    if len(caption) > MAX_TEXT_LENGTH or not complete:
        caption = caption[:MAX_TEXT_LENGTH].rstrip()
        warnings.append(f"caption {name} is longer than the {MAX_TEXT_LENGTH} characters "
                        f"allowed (trigger phrase included): only the first "
                        f"{MAX_TEXT_LENGTH} are used")
    return Caption(caption, tuple(warnings), described=bool(text))
