"""Stamp the citation into a released file, so the source travels with it."""

from __future__ import annotations

import io
import zipfile

import pyarrow.parquet as pq

TEXT_SUFFIXES = (".csv", ".txt", ".md", ".tsv")


def stamp(filename: str, content: bytes, citation: str) -> tuple[str, bytes]:
    """Return the released file name and bytes with ``citation`` inside."""
    lower = filename.lower()
    if lower.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(content))
        meta = dict(table.schema.metadata or {})
        meta[b"dsb.citation"] = citation.encode()
        out = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), out)
        return filename, out.getvalue()
    if lower.endswith(TEXT_SUFFIXES):
        lines = "".join(f"# {line}\n" for line in citation.splitlines())
        return filename, lines.encode() + content
    # A binary we cannot annotate in place: ship it with a CITATION.txt beside it.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(filename, content)
        bundle.writestr("CITATION.txt", citation + "\n")
    return filename + ".zip", out.getvalue()
