"""The dashboard's pages as HTML text. Every value from the store goes through `esc`
(payloads are shown as text, never as markup); no templates, no scripts but the small
one that refreshes the status counts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from durable import _timeline
from durable.core.events import FailureDetails, HistoryEvent
from durable.core.state import OrchestrationState, OrchestrationStatus

PAYLOAD_CHARS = 2000
"""How much of an input, output or custom status an instance page shows."""

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 20px}header a{color:#fff}
main{padding:16px 20px}h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{border-bottom:1px solid #e3e6eb;padding:5px 8px;text-align:left;vertical-align:top}
pre{background:#fff;border:1px solid #e3e6eb;padding:8px;white-space:pre-wrap;
 word-break:break-all;margin:0}
.status{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
.s-PENDING{background:#7a8291}.s-RUNNING{background:#2a6fdb}.s-COMPLETED{background:#23914f}
.s-FAILED{background:#d0312d}.s-TERMINATED{background:#444}.s-SUSPENDED{background:#d98a0b}
.s-CONTINUED_AS_NEW{background:#7d4cc2}
#counts a{margin-right:14px;text-decoration:none;color:#1d2430}
.failed{color:#d0312d}tr.failed td{background:#fdecec}
#failure{border:2px solid #d0312d;background:#fdecec;padding:8px}
form.inline{display:inline-block;margin:0 8px 8px 0}
.notice{background:#e7f0fd;border:1px solid #2a6fdb;padding:8px;margin-bottom:12px}
.error{background:#fdecec;border:1px solid #d0312d;padding:8px;margin-bottom:12px}
dl{display:grid;grid-template-columns:140px 1fr;gap:4px 12px;margin:0}dt{color:#6a7280}
svg text{font:11px system-ui,sans-serif;fill:#1d2430}
"""

_COLORS = {
    "activity": "#2a6fdb",
    "timer": "#d98a0b",
    "child": "#7d4cc2",
    "event": "#23914f",
    "entity": "#0f8b8d",
    "run": "#7a8291",
    "control": "#444444",
}
FAILED_COLOR = "#d0312d"

_COUNTS_SCRIPT = """
<script>
setInterval(async () => {
  try {
    const counts = await (await fetch(COUNTS_URL)).json();
    for (const [status, n] of Object.entries(counts)) {
      const b = document.querySelector(`#counts [data-status="${status}"] b`);
      if (b) b.textContent = String(n);
    }
  } catch (e) {}
}, 2000);
</script>
"""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def page(root: str, title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · durable</title><style>{_CSS}</style></head><body>"
        f'<header><a href="{esc(root)}">durable</a> · {esc(title)}</header>'
        f"<main>{body}</main></body></html>"
    )


def badge(status: OrchestrationStatus | str) -> str:
    value = status.value if isinstance(status, OrchestrationStatus) else status
    return f'<span class="status s-{esc(value)}">{esc(value)}</span>'


def _time(at: datetime) -> str:
    return esc(at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


def instance_href(root: str, instance_id: str) -> str:
    return f"{root}instances/{quote(instance_id, safe='')}"


def counts_nav(counts: dict[str, int], cap: int) -> str:
    links = []
    for status, n in counts.items():
        shown = f"{n}+" if n >= cap else str(n)
        href = "?" + urlencode({"status": status})
        links.append(
            f'<a data-status="{esc(status)}" href="{esc(href)}">{badge(status)} <b>{shown}</b></a>'
        )
    return f'<nav id="counts">{"".join(links)}</nav>'


def instance_list(
    root: str,
    *,
    counts: dict[str, int],
    cap: int,
    states: Sequence[OrchestrationState],
    filters: dict[str, str],
    next_token: str | None,
) -> str:
    options = "".join(
        f'<option value="{esc(s.value)}"'
        f"{' selected' if filters.get('status') == s.value else ''}>{esc(s.value)}</option>"
        for s in OrchestrationStatus
    )
    form = (
        '<form id="filters" method="get" style="margin:12px 0">'
        f'<select name="status"><option value="">any status</option>{options}</select> '
        '<input name="name" placeholder="orchestrator name"'
        f' value="{esc(filters.get("name", ""))}"> '
        '<input name="since" placeholder="since: 15m, 2h, ISO time"'
        f' value="{esc(filters.get("since", ""))}"> <button>Filter</button>'
        f' <a href="{esc(root)}">clear</a></form>'
    )
    rows = "".join(
        f'<tr data-id="{esc(s.instance_id)}">'
        f'<td><a href="{esc(instance_href(root, s.instance_id))}">{esc(s.instance_id)}</a></td>'
        f"<td>{esc(s.name)}</td><td>{badge(s.runtime_status)}</td>"
        f"<td>{_time(s.created_at)}</td><td>{_time(s.last_updated_at)}</td></tr>"
        for s in states
    )
    table = (
        '<table id="instances"><thead><tr><th>instance</th><th>name</th><th>status</th>'
        f"<th>created</th><th>updated</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    if not states:
        table += "<p>No orchestrations match.</p>"
    more = ""
    if next_token is not None:
        href = "?" + urlencode({**filters, "after": next_token})
        more = f'<p><a id="next" href="{esc(href)}">next page</a></p>'
    script = _COUNTS_SCRIPT.replace("COUNTS_URL", json.dumps(f"{root}api/counts"))
    return counts_nav(counts, cap) + form + table + more + script


def _payload(element_id: str, text: str | None) -> str:
    if text is None:
        return f'<pre id="{element_id}">-</pre>'
    shown = text if len(text) <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS]
    note = (
        ""
        if len(text) <= PAYLOAD_CHARS
        else f'<p class="cut">cut: {len(text):,} characters in all</p>'
    )
    return f'<pre id="{element_id}">{esc(shown)}</pre>{note}'


def _failure(failure: FailureDetails, status: OrchestrationStatus) -> str:
    what = "Failed" if status is OrchestrationStatus.FAILED else "Blocked"
    trace = f"<pre>{esc(failure.stack_trace)}</pre>" if failure.stack_trace else ""
    return (
        f'<h2 class="failed">{what}</h2><div id="failure"><b>{esc(failure.error_type)}</b>: '
        f"{esc(failure.message)}{trace}</div>"
    )


def instance_page(
    root: str,
    *,
    state: OrchestrationState,
    history: Sequence[HistoryEvent],
    children: Iterable[tuple[str, str, str]],
    actions: str,
    notice: str | None,
) -> str:
    parts = []
    if notice:
        parts.append(f'<div class="notice" id="notice">{esc(notice)}</div>')
    parent = (
        f'<a href="{esc(instance_href(root, state.parent_instance_id))}">'
        f"{esc(state.parent_instance_id)}</a>"
        if state.parent_instance_id
        else "-"
    )
    parts.append(
        f'<h1>{esc(state.instance_id)} <span id="status">{badge(state.runtime_status)}</span></h1>'
        f"<dl><dt>orchestrator</dt><dd>{esc(state.name)}</dd>"
        f"<dt>created</dt><dd>{_time(state.created_at)}</dd>"
        f"<dt>updated</dt><dd>{_time(state.last_updated_at)}</dd>"
        f"<dt>parent</dt><dd>{parent}</dd></dl>"
    )
    if state.failure_details is not None:
        parts.append(_failure(state.failure_details, state.runtime_status))
    parts.append(f'<h2>Actions</h2><div id="actions">{actions}</div>')
    parts.append("<h2>Timeline</h2>" + timeline_svg(history))
    parts.append(
        "<h2>Custom status</h2>" + _payload("custom-status", state.serialized_custom_status)
    )
    parts.append("<h2>Input</h2>" + _payload("input", state.serialized_input))
    parts.append("<h2>Output</h2>" + _payload("output", state.serialized_output))
    kids = "".join(
        f'<li><a href="{esc(instance_href(root, iid))}">{esc(iid)}</a> {esc(name)} {badge(status)}'
        "</li>"
        for iid, name, status in children
    )
    if kids:
        parts.append(f'<h2>Children</h2><ul id="children">{kids}</ul>')
    parts.append("<h2>History</h2>" + history_table(history))
    return "".join(parts)


def history_table(history: Sequence[HistoryEvent]) -> str:
    start = min((e.timestamp for e in history), default=None)
    rows = []
    for line in _timeline.lines(history):
        offset = (line.at - start).total_seconds() if start is not None else 0.0
        cls = ' class="failed"' if line.failed else ""
        rows.append(
            f"<tr{cls}><td>{line.number}</td><td>{offset:+.3f}s</td><td>{esc(line.category)}</td>"
            f"<td>{esc(line.kind)}</td><td>{esc(line.text)}</td></tr>"
        )
    return (
        '<table id="history"><thead><tr><th>#</th><th>time</th><th>category</th><th>event</th>'
        f"<th>what happened</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


_WIDTH, _LABELS, _ROW = 900, 260, 22


def timeline_svg(history: Sequence[HistoryEvent]) -> str:
    """Each step as a bar on a time axis: activities, timers, children, entity calls; an
    event as a diamond. Failed steps are red; steps under way reach the last event."""
    spans = _timeline.spans(history)
    if not history or not spans:
        return '<p id="timeline">No steps yet.</p>'
    start = min(e.timestamp for e in history)
    end = max(e.timestamp for e in history)
    total = max((end - start).total_seconds(), 1e-3)
    scale = (_WIDTH - _LABELS - 20) / total

    def x(at: datetime) -> float:
        return _LABELS + (at - start).total_seconds() * scale

    items = []
    for i, span in enumerate(spans):
        y = 24 + i * _ROW
        color = FAILED_COLOR if span.failed else _COLORS[span.category]
        state = "failed" if span.failed else "open" if span.end is None else "done"
        finish = span.end if span.end is not None else end
        took = f"{(finish - span.start).total_seconds():.3f}s"
        title = f"<title>{esc(span.category)} {esc(span.label)}: {took} ({state})</title>"
        label = span.label if len(span.label) <= 38 else span.label[:35] + "..."
        items.append(f'<text x="4" y="{y + 12}">{esc(span.category)}: {esc(label)}</text>')
        common = f'class="bar {state}" data-category="{esc(span.category)}" fill="{color}"'
        if span.category == "event":
            cx = x(span.start)
            points = f"{cx:.1f},{y + 1} {cx + 7:.1f},{y + 8} {cx:.1f},{y + 15} {cx - 7:.1f},{y + 8}"
            items.append(f'<polygon {common} points="{points}">{title}</polygon>')
        else:
            width = max(x(finish) - x(span.start), 3.0)
            dash = ' stroke="#1d2430" stroke-dasharray="3 2"' if span.end is None else ""
            items.append(
                f'<rect {common}{dash} x="{x(span.start):.1f}" y="{y}" width="{width:.1f}"'
                f' height="16" rx="3">{title}</rect>'
            )
    height = 24 + len(spans) * _ROW + 8
    axis = (
        f'<line x1="{_LABELS}" y1="14" x2="{_WIDTH - 20}" y2="14" stroke="#9aa1ad"/>'
        f'<text x="{_LABELS}" y="10">0 s</text>'
        f'<text x="{_WIDTH - 20}" y="10" text-anchor="end">{total:.3f} s</text>'
    )
    return (
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}"'
        f' style="background:#fff;border:1px solid #e3e6eb">{axis}{"".join(items)}</svg>'
    )


def confirm_page(question: str, action: str, fields: dict[str, str], back: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items()
    )
    return (
        f'<h1>{esc(question)}</h1><form id="confirm" method="post" action="{esc(action)}">'
        f'{hidden}<input type="hidden" name="confirmed" value="yes">'
        f'<button id="confirm-button">Confirm</button> <a id="cancel" href="{esc(back)}">Cancel</a>'
        "</form>"
    )


def error_box(message: str, back: str) -> str:
    return (
        f'<div class="error" id="error">{esc(message)}</div><p><a href="{esc(back)}">back</a></p>'
    )
