"""Widgets as self-contained HTML, for sharing, CI and browsers without a kernel or network.

Two ways to save a widget:

- :func:`to_static_html` walks the widget tree and writes plain HTML: boxes become ``<div>``s,
  tabs/accordions become titled sections, ``Image`` widgets and matplotlib outputs become
  ``<img>`` tags with the PNG embedded as base64, controls become disabled HTML controls showing
  their current value.  No JavaScript, no network: it opens anywhere, which is what the headless
  browser test checks.
- :func:`save_embedded_html` is ipywidgets' own embedding (:func:`ipywidgets.embed.embed_minimal_html`):
  it stores the full widget state, but the page loads the widget manager JavaScript from a CDN
  (unpkg / jsDelivr), so it renders only with network access.  No Python package ships that
  standalone bundle (``widgetsnbextension`` only has the classic-notebook extension), so the
  offline path is the static one.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import ipywidgets as widgets

_STYLE = (
    "body{font-family:sans-serif;margin:1.2em}"
    ".nwb-ltr-row{display:flex;flex-direction:row;flex-wrap:wrap;gap:0.6em;align-items:center}"
    ".nwb-ltr-col{display:flex;flex-direction:column;gap:0.3em;align-items:flex-start}"
    "img{max-width:100%}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}"
    "table{border-collapse:collapse;font-size:0.8em}td,th{border:1px solid #ccc;padding:2px 5px}"
)


def _img(data: bytes, fmt: str = "png", alt: str = "figure", width: str = "") -> str:
    encoded = base64.b64encode(bytes(data)).decode("ascii")
    size = f" width='{html.escape(width)}'" if width else ""
    return f"<img alt='{html.escape(alt)}'{size} src='data:image/{fmt};base64,{encoded}'>"


def _titles(widget: widgets.Widget) -> list[str]:
    titles = list(getattr(widget, "titles", ()) or ())
    return [str(t) if t else f"section {i + 1}" for i, t in enumerate(titles)] + [
        f"section {i + 1}" for i in range(len(titles), len(widget.children))
    ]


def _output(widget: widgets.Output) -> str:
    parts = []
    for item in widget.outputs:
        data = item.get("data", {})
        if "image/png" in data:
            parts.append(_img(base64.b64decode(data["image/png"])))
        elif "text/html" in data:
            parts.append(str(data["text/html"]))
        elif "text/plain" in data:
            parts.append(f"<pre>{html.escape(str(data['text/plain']))}</pre>")
        elif item.get("output_type") == "stream":
            parts.append(f"<pre>{html.escape(str(item.get('text', '')))}</pre>")
    return "".join(parts)


def _label(widget: widgets.Widget) -> str:
    text = getattr(widget, "description", "")
    return f"<label>{html.escape(str(text))}</label> " if text else ""


def _render(widget: Any) -> str:
    if isinstance(widget, widgets.Image):
        return _img(widget.value, str(widget.format or "png"), width=str(widget.width or ""))
    if isinstance(widget, (widgets.HTML, widgets.HTMLMath)):
        return str(widget.value)
    if isinstance(widget, widgets.Label):
        return f"<span>{html.escape(str(widget.value))}</span>"
    if isinstance(widget, widgets.Output):
        return _output(widget)
    if isinstance(widget, (widgets.Tab, widgets.Accordion, widgets.Stack)):
        sections = (
            f"<section><h3>{html.escape(title)}</h3>{_render(child)}</section>"
            for title, child in zip(_titles(widget), widget.children)
        )
        return "<div class='nwb-ltr-col'>" + "".join(sections) + "</div>"
    if isinstance(widget, widgets.Box):
        css = "nwb-ltr-row" if isinstance(widget, widgets.HBox) else "nwb-ltr-col"
        return f"<div class='{css}'>" + "".join(_render(c) for c in widget.children) + "</div>"
    if isinstance(widget, (widgets.Dropdown, widgets.Select, widgets.ToggleButtons, widgets.RadioButtons)):
        options = "".join(
            f"<option{' selected' if value == widget.value else ''}>{html.escape(str(label))}</option>"
            for label, value in zip(widget._options_labels, widget._options_values)
        )
        return f"<span>{_label(widget)}<select disabled>{options}</select></span>"
    if isinstance(widget, (widgets.IntSlider, widgets.FloatSlider)):
        return (
            f"<span>{_label(widget)}<input type='range' disabled min='{widget.min}' max='{widget.max}' "
            f"value='{widget.value}'> {html.escape(str(widget.value))}</span>"
        )
    if isinstance(widget, widgets.ValueWidget):
        return f"<span>{_label(widget)}{html.escape(str(widget.value))}</span>"
    return f"<div>[{html.escape(type(widget).__name__)}]</div>"


def to_static_html(widget: widgets.Widget, *, title: str = "nwb_ltr widget") -> str:
    """A self-contained HTML page showing the widget's current state (no JavaScript, no network).

    Parameters
    ----------
    widget
        Any ipywidgets widget tree (e.g. from ``nwb2widget`` or :class:`LtrModelWidget`).
    title
        Page title and top heading.

    Returns
    -------
    str
    """
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_render(widget)}</body></html>\n"
    )


def save_static_html(widget: widgets.Widget, path: str | Path, *, title: str = "nwb_ltr widget") -> Path:
    """Write :func:`to_static_html` to ``path`` and return it."""
    path = Path(path)
    path.write_text(to_static_html(widget, title=title), encoding="utf-8")
    return path


def save_embedded_html(widget: widgets.Widget, path: str | Path, *, title: str = "nwb_ltr widget") -> Path:
    """ipywidgets' standalone embedding (full widget state; needs network to load its JavaScript)."""
    from ipywidgets.embed import embed_minimal_html

    path = Path(path)
    embed_minimal_html(str(path), views=[widget], title=title)
    return path


__all__ = ["save_embedded_html", "save_static_html", "to_static_html"]
