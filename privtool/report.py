"""One self-contained HTML page (and a Markdown twin) of a results folder.

The folder is either a calibration (``privtool calibrate --out DIR``: calibration.json, PNGs)
or a folder of runs and attacks, which is then calibrated in memory first (nothing is written
into it). The page holds the calibration tables, the equivalent-ε sentences, every plot (PNG
embedded as base64), each run's settings and the exact command that reproduces it, and every
file of the folder: PNGs embedded, everything else linked relative to the page.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from privtool.artifacts import atomic_write_bytes, read_json
from privtool.errors import PrivtoolError
from privtool.schema import build, settings, validate

CALIBRATION = "calibration.json"


@settings("report")
@dataclass(frozen=True)
class ReportConfig:
    """``params.yaml: report:``."""

    title: str = "privtool results"
    markdown: bool = True  # also write FILE.md beside FILE.html

    def __post_init__(self) -> None:
        validate(self)


def report_settings(raw: Mapping[str, Any] | None) -> ReportConfig:
    """``params.yaml: report:`` -> :class:`ReportConfig` (:func:`privtool.schema.build`)."""
    return build(ReportConfig, raw, "report")


# --------------------------------------------------------------------------------- inputs


def _files(folder: Path, skip: set[Path]) -> list[Path]:
    """Every file under ``folder`` (hidden ones and ``skip`` left out), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not name.startswith(".") and p.resolve() not in skip:
                out.append(p)
    return out


def _load_calibration(
    folder: Path, raw_params: Mapping[str, Any], scratch: Path
) -> tuple[dict[str, Any], Path]:
    """(calibration.json contents, the directory its plots are in)."""
    if (folder / CALIBRATION).is_file():
        doc = read_json(
            folder / CALIBRATION,
            what="calibration",
            remedy=f"re-run `privtool calibrate --out {folder}`",
        )
        if not isinstance(doc.get("tables"), list) or not isinstance(doc.get("rows"), list):
            raise PrivtoolError(
                f"{folder / CALIBRATION} is not a calibration written by "
                f"privtool calibrate; re-run `privtool calibrate --out {folder}`"
            )
        return doc, folder
    from privtool.calibrate import build, calibrate_settings, collect
    from privtool.calibrate.output import JSON, write_outputs

    cal = build(collect(folder), calibrate_settings(raw_params.get("calibrate")))
    write_outputs(cal, scratch)
    return json.loads((scratch / JSON).read_text()), scratch


# ------------------------------------------------------------------------------ rendering


def _fmt(v: Any) -> str:
    from privtool.calibrate.tables import fmt

    return fmt(v)


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _rel(path: Path, page: Path) -> str:
    """``path`` relative to the page's folder, with forward slashes."""
    return Path(os.path.relpath(path.resolve(), page.resolve().parent)).as_posix()


def _href(path: Path, page: Path) -> str:
    return html.escape(_rel(path, page), quote=True)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k in sorted(d):
        v = d[k]
        if isinstance(v, Mapping) and v:
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _html_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;
font-size:.8em}details{margin:.3em 0}summary{cursor:pointer}.note{color:#555;font-size:.9em}
nav a{margin-right:1em}
"""


def render(
    folder: str | Path,
    out: str | Path,
    *,
    raw_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out`` (HTML) and, with ``report.markdown``, ``out`` with suffix .md."""
    folder, out = Path(folder), Path(out)
    raw_params = raw_params or {}
    cfg = report_settings(raw_params.get("report"))
    if folder.exists() and not folder.is_dir():
        raise PrivtoolError(
            f"{folder} is a file, not a folder; pass a folder written by "
            f"`privtool calibrate --out DIR` or one holding train/attack runs"
        )
    if not folder.is_dir():
        raise PrivtoolError(
            f"{folder} does not exist; pass a folder written by `privtool "
            f"calibrate --out DIR` or one holding train/attack runs"
        )
    if out.exists() and out.is_dir():
        raise PrivtoolError(f"--out {out} is a directory; name the HTML file to write")
    md_path = out.with_suffix(".md")
    with tempfile.TemporaryDirectory(prefix="privtool-report-") as scratch:
        doc, plot_dir = _load_calibration(folder, raw_params, Path(scratch))
        files = _files(folder, {out.resolve(), md_path.resolve()})
        page, md = _compose(cfg, folder, out, doc, plot_dir, files)
    for path, text in ((out, page), (md_path, md) if cfg.markdown else (None, "")):
        if path is not None:
            atomic_write_bytes(path, text.encode("utf-8"))
            _readable(path)
    return {
        "html": str(out),
        "markdown": str(md_path) if cfg.markdown else None,
        "n_tables": len(doc["tables"]),
        "n_plots": len(doc.get("plots") or []),
        "n_files": len(files),
        "n_sources": len(doc.get("sources") or []),
        "bytes": len(page.encode("utf-8")),
    }


def _compose(
    cfg: ReportConfig,
    folder: Path,
    out: Path,
    doc: dict[str, Any],
    plot_dir: Path,
    files: list[Path],
) -> tuple[str, str]:
    import privtool

    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    intro = (
        f"Results folder <code>{_esc(folder)}</code> (calibration of "
        f"<code>{_esc(doc.get('root'))}</code>), rendered {stamp} by privtool "
        f"{privtool.__version__}."
    )
    h: list[str] = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(cfg.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(cfg.title)}</h1><p>{intro}</p>",
        "<nav><a href='#equivalent'>equivalent ε</a><a href='#tables'>tables</a>"
        "<a href='#plots'>plots</a><a href='#runs'>runs and commands</a>"
        "<a href='#files'>files</a></nav>",
    ]
    m: list[str] = [
        f"# {cfg.title}",
        "",
        f"Results folder `{folder}` (calibration of `{doc.get('root')}`), rendered "
        f"{stamp} by privtool {privtool.__version__}.",
        "",
    ]

    sentences = [e["text"] for e in doc.get("equivalent") or [] if e.get("relation")]
    h.append("<h2 id='equivalent'>Equivalent ε</h2>")
    m += ["## Equivalent ε", ""]
    if sentences:
        h.append("<ul>" + "".join(f"<li>{_esc(s)}</li>" for s in sentences) + "</ul>")
        m += [f"- {s}" for s in sentences] + [""]
    else:
        h.append(
            "<p class='note'>No run could be matched to the baseline's ε (it needs at "
            "least two baseline runs attacked the same way).</p>"
        )
        m += ["No run could be matched to the baseline's ε.", ""]

    h.append("<h2 id='tables'>Tables</h2>")
    m += ["## Tables", ""]
    for t in doc["tables"]:
        h.append(f"<h3 id='table-{_esc(t['name'])}'>{_esc(t['title'])}</h3>")
        m += [f"### {t['title']}", ""]
        if t.get("note"):
            h.append(f"<p class='note'>{_esc(t['note'])}</p>")
            m += [t["note"], ""]
        if t["rows"]:
            h.append(_html_table(t["columns"], t["rows"]))
            m += [_md_table(t["columns"], t["rows"]), ""]
        else:
            h.append("<p class='note'>(no rows)</p>")
            m += ["(no rows)", ""]

    h.append("<h2 id='plots'>Plots</h2>")
    m += ["## Plots", ""]
    shown: set[Path] = set()
    for rel in doc.get("plots") or []:
        p = plot_dir / rel
        if not p.is_file():
            continue
        shown.add(p.resolve())
        h.append(
            f"<figure><img alt='{_esc(rel)}' src='{_data_uri(p)}'>"
            f"<figcaption>{_esc(rel)}</figcaption></figure>"
        )
        m += [
            f"![{rel}]({_rel(p, out)})"
            if plot_dir == folder
            else f"- {rel} (embedded in {out.name})",
            "",
        ]

    h.append("<h2 id='runs'>Runs, settings and the commands that reproduce them</h2>")
    m += ["## Runs, settings and the commands that reproduce them", ""]
    for s in doc.get("sources") or []:
        what = s["stage"] + (
            f" {s['attack']} → {s.get('target')}"
            if s.get("attack")
            else f" {s.get('mechanism') or ''}"
        )
        what += f" — noise: {s['noise']}" if s.get("noise") else ""
        h.append(
            f"<details><summary><code>{_esc(s['dir'])}</code> — {_esc(what)} — meta "
            f"{_esc(str(s['meta_sha256'])[:12])}</summary>"
        )
        m += [f"### `{s['dir']}` — {what} — meta {str(s['meta_sha256'])[:12]}", ""]
        if s.get("command"):
            h.append(f"<pre>{_esc(s['command'])}</pre>")
            m += ["```bash", s["command"], "```", ""]
        settings = list(_flatten(s.get("settings") or {}))
        if settings:
            h.append(_html_table(["setting", "value"], [[k, _setting(v)] for k, v in settings]))
            m += [_md_table(["setting", "value"], [[k, _setting(v)] for k, v in settings]), ""]
        h.append("</details>")

    h.append(
        f"<h2 id='files'>Files of {_esc(folder)}</h2><table><thead><tr><th>file</th>"
        "<th>bytes</th><th>content</th></tr></thead><tbody>"
    )
    m += [f"## Files of `{folder}`", "", "| file | bytes |", "|---|---|"]
    for p in files:
        rel = p.relative_to(folder).as_posix()
        link = f"<a href='{_href(p, out)}'>{_esc(rel)}</a>"
        if p.suffix.lower() == ".png" and p.resolve() not in shown:
            content = f"<img alt='{_esc(rel)}' style='max-width:600px' src='{_data_uri(p)}'>"
        elif p.suffix.lower() == ".png":
            content = "shown under Plots"
        else:
            content = ""
        h.append(f"<tr><td>{link}</td><td>{p.stat().st_size}</td><td>{content}</td></tr>")
        m.append(f"| [{rel}]({_rel(p, out)}) | {p.stat().st_size} |")
    h.append("</tbody></table>")
    m.append("")

    warnings = doc.get("warnings") or []
    if warnings:
        h.append(
            "<h2>Warnings</h2><ul>" + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>"
        )
        m += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    h.append("</body></html>")
    return "\n".join(h), "\n".join(m)


def _readable(path: Path) -> None:
    """A page is for sharing: give it the permissions of an ordinary file (mkstemp's are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _setting(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v
