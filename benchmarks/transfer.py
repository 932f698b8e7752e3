"""Move a file too large for one transfer in parts: split it into parts under a size limit with a manifest of
sha256 digests, and on the other machine join the parts back, verifying every part and the whole.

    python -m benchmarks.transfer split FILE OUT_DIR [--part-mb 48]
    python -m benchmarks.transfer join OUT_DIR/FILE.manifest.json [--out PATH]

``split`` writes ``<name>.part000``, ``<name>.part001``, ... and ``<name>.manifest.json`` (name, size and sha256
of the file and of each part). ``join`` checks each part's size and sha256 before writing, writes the file
beside the manifest (or at ``--out``) through a temporary name, and renames it into place only when the whole
file's sha256 matches. Standard library only, so it runs before any environment is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

CHUNK = 1 << 20
MANIFEST_SUFFIX = ".manifest.json"


class TransferError(Exception):
    """A part or the joined file does not match its manifest."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def split(path: str | Path, out_dir: str | Path, part_bytes: int) -> Path:
    """Split ``path`` into parts of at most ``part_bytes`` bytes in ``out_dir``; returns the manifest's path."""
    path, out_dir = Path(path), Path(out_dir)
    if part_bytes < 1:
        raise ValueError(f"part size must be at least 1 byte, got {part_bytes}")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, whole = [], hashlib.sha256()
    with path.open("rb") as src:
        while True:
            data = src.read(part_bytes)
            if not data and parts:
                break
            whole.update(data)
            part = out_dir / f"{path.name}.part{len(parts):03d}"
            part.write_bytes(data)
            parts.append({"file": part.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            if len(data) < part_bytes:
                break
    manifest = {"name": path.name, "size": path.stat().st_size, "sha256": whole.hexdigest(), "parts": parts}
    manifest_path = out_dir / f"{path.name}{MANIFEST_SUFFIX}"
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest_path


def join(manifest_path: str | Path, out: str | Path | None = None) -> Path:
    """Verify the parts listed in ``manifest_path`` (beside it) and join them into ``out`` (default: the
    original name beside the manifest); raises :class:`TransferError` naming the first part that differs."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    out = Path(out) if out is not None else manifest_path.parent / manifest["name"]
    for entry in manifest["parts"]:
        part = manifest_path.parent / entry["file"]
        if not part.is_file():
            raise TransferError(
                f"{part}: part missing ({len(manifest['parts'])} parts listed in {manifest_path})"
            )
        size = part.stat().st_size
        if size != entry["size"] or file_sha256(part) != entry["sha256"]:
            raise TransferError(
                f"{part}: {size} bytes with sha256 {file_sha256(part)}, expected {entry['size']} bytes with "
                f"sha256 {entry['sha256']} (corrupted or incomplete transfer: bring this part again)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst:
            for entry in manifest["parts"]:
                with (manifest_path.parent / entry["file"]).open("rb") as src:
                    while block := src.read(CHUNK):
                        dst.write(block)
        digest = file_sha256(tmp)
        if digest != manifest["sha256"] or tmp.stat().st_size != manifest["size"]:
            raise TransferError(f"{out}: joined file has sha256 {digest}, expected {manifest['sha256']}")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_split = sub.add_parser("split", help="split FILE into parts in OUT_DIR")
    p_split.add_argument("file", type=Path)
    p_split.add_argument("out_dir", type=Path)
    p_split.add_argument("--part-mb", type=float, default=48.0, help="largest part, in MiB (default 48)")
    p_join = sub.add_parser("join", help="verify the parts of MANIFEST and join them")
    p_join.add_argument("manifest", type=Path)
    p_join.add_argument("--out", type=Path, default=None, help="where to write the file (default: beside)")
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            result = split(args.file, args.out_dir, int(args.part_mb * (1 << 20)))
        else:
            result = join(args.manifest, args.out)
    except TransferError as err:
        sys.exit(f"error: {err}")
    print(result)
    return result


if __name__ == "__main__":
    main()
