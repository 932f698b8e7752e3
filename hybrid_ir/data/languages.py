"""Language codes: the ISO 639-1 codes accepted by every loader, and a check that names the file.
See docs/data.md."""

from __future__ import annotations

from collections.abc import Iterable

from hybrid_ir.utils.errors import DataError

_CODES = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz
    ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik
    io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml
    mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd
    se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi
    vo wa wo xh yi yo za zh zu
    """
ISO_639_1: frozenset[str] = frozenset(_CODES.split())
"""All 184 ISO 639-1 codes (lower case), including the withdrawn ``bh`` (Bihari)."""


def check_lang(code: object, path: object, record: object) -> str:
    """Return ``code`` if it is an ISO 639-1 code, else raise DataError naming ``path`` and ``record``."""
    if not isinstance(code, str) or code not in ISO_639_1:
        raise DataError(
            path, record, f"unknown language code {code!r}; expected an ISO 639-1 code such as 'en'"
        )
    return code


def check_langs(codes: str | Iterable[str], path: object, record: object = "languages") -> list[str]:
    """Validate a language list (a single code is accepted too); return the codes sorted, without repeats."""
    if isinstance(codes, str):
        codes = [codes]
    return sorted({check_lang(code, path, record) for code in codes})
