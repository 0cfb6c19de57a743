"""DANDI sources: parse identifiers, resolve assets with the dandi client, stream or download.

(placeholder: implemented by the DANDI work; see docs/architecture.md)
"""

from __future__ import annotations
