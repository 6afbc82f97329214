"""A local web dashboard over any store: `durable dashboard`, or `create_app(store)` to
mount it in your own ASGI app (it needs the `dashboard` extra: Starlette and uvicorn).

Pages: the instance list with live status counts and filters; an instance's page with
its history as a timeline, its payloads (cut to a size), custom status, failure and
children; and its actions (raise an event, terminate, suspend, resume, rewind), each
behind a confirmation page. Every value from the store is rendered as text.

There is no login: the server binds to 127.0.0.1 unless told otherwise, and every form
carries a token made at start-up, so that another web page in the same browser cannot
post to it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from durable import _cli_instances as shared
from durable import _dashboard_html as html
from durable.client import Client
from durable.core.errors import DurableError
from durable.core.events import ChildOrchestrationCreated
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.base import InstanceQuery, Store

__all__ = ["create_app"]

PAGE_SIZE = 50
_S = OrchestrationStatus

# action -> (the statuses it applies to, its question, what the notice says after)
_ACTIONS: dict[str, tuple[tuple[OrchestrationStatus, ...], str, str]] = {
    "raise-event": (
        (_S.PENDING, _S.RUNNING, _S.SUSPENDED),
        "Send event {event!r} to {id}?",
        "event sent",
    ),
    "terminate": ((_S.PENDING, _S.RUNNING, _S.SUSPENDED), "Terminate {id}?", "terminate sent"),
    "suspend": ((_S.PENDING, _S.RUNNING), "Suspend {id}?", "suspend sent"),
    "resume": ((_S.SUSPENDED,), "Resume {id}?", "resume sent"),
    "rewind": ((_S.FAILED,), "Rewind {id}: run its failed steps again?", "rewind sent"),
}


def create_app(store: Store, *, close_store: bool = False) -> Starlette:
    """The dashboard as an ASGI app over `store`.

    Args:
        store: any store; it is not closed when the app stops unless `close_store`.
        close_store: close the store at the app's shutdown (the CLI's own store).
    """
    board = _Dashboard(store)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_store:
                await store.close()

    return Starlette(
        routes=[
            Route("/", board.instances),
            Route("/api/counts", board.counts),
            Route("/instances/{instance_id:path}/{action}", board.act, methods=["POST"]),
            Route("/instances/{instance_id:path}", board.instance),
        ],
        lifespan=lifespan,
    )


def _root(request: Request) -> str:
    """Where the app is mounted: links are absolute under it."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


def _respond(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html.page(_root(request), title, body), status_code=status)


def _error(request: Request, message: str, status: int, back: str | None = None) -> HTMLResponse:
    return _respond(request, "error", html.error_box(message, back or _root(request)), status)


class _Dashboard:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = Client(store)
        self.token = secrets.token_urlsafe(16)
        """Every form carries it: a page elsewhere cannot post to the dashboard."""

    async def instances(self, request: Request) -> Response:
        q = request.query_params
        filters = {k: q[k] for k in ("status", "name", "since") if q.get(k)}
        try:
            status = (OrchestrationStatus(filters["status"]),) if "status" in filters else ()
            since = shared.parse_time(filters["since"]) if "since" in filters else None
            page = await self.store.list_instances(
                InstanceQuery(
                    statuses=status,
                    name=filters.get("name"),
                    created_from=since,
                    limit=PAGE_SIZE,
                    after=q.get("after") or None,
                    entities=False,
                )
            )
        except ValueError as e:
            return _error(request, str(e), 400)
        body = html.instance_list(
            _root(request),
            counts=await shared.status_counts(self.client),
            cap=shared.COUNT_CAP,
            states=page.instances,
            filters=filters,
            next_token=page.next_token,
        )
        return _respond(request, "orchestrations", body)

    async def counts(self, request: Request) -> Response:
        return JSONResponse(await shared.status_counts(self.client))

    async def instance(self, request: Request) -> Response:
        iid = request.path_params["instance_id"]
        state = await self.client.get_orchestration_state(iid)
        if state is None:
            return _error(request, f"no orchestration has id {iid!r}", 404)
        history = await self.client.get_orchestration_history(iid)
        children = []
        for event in history:
            if isinstance(event, ChildOrchestrationCreated):
                child = await self.client.get_orchestration_state(event.instance_id)
                status = child.runtime_status.value if child is not None else "purged"
                children.append((event.instance_id, event.name, status))
        body = html.instance_page(
            _root(request),
            state=state,
            history=history,
            children=children,
            actions=_action_forms(_root(request), state, self.token),
            notice=request.query_params.get("done"),
        )
        return _respond(request, iid, body)

    async def act(self, request: Request) -> Response:
        """An action's form: first a confirmation page, then (confirmed) the action."""
        iid, action = request.path_params["instance_id"], request.path_params["action"]
        back = html.instance_href(_root(request), iid)
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        if action not in _ACTIONS:
            return _error(request, f"no action {action!r}", 404, back)
        if not secrets.compare_digest(form.get("token", ""), self.token):
            message = "this form is stale or came from elsewhere: reload the page"
            return _error(request, message, 403, back)
        state = await self.client.get_orchestration_state(iid)
        if state is None:
            return _error(request, f"no orchestration has id {iid!r}", 404, back)
        statuses, question, did = _ACTIONS[action]
        if state.runtime_status not in statuses:
            message = f"{iid} is {state.runtime_status.value}: it cannot be sent {action}"
            return _error(request, message, 409, back)
        try:
            data = json.loads(form["data"]) if form.get("data") else None
        except ValueError as e:
            return _error(request, f"the data is not JSON: {e}", 400, back)
        event = form.get("event", "")
        if action == "raise-event" and not event:
            return _error(request, "name the event", 400, back)
        if form.get("confirmed") != "yes":
            fields = {k: v for k, v in form.items() if k != "confirmed"}
            ask = question.format(id=iid, event=event)
            page = html.confirm_page(ask, str(request.url), fields, back)
            return _respond(request, "confirm", page)
        try:
            await _perform(self.client, action, iid, form, data)
        except DurableError as e:
            return _error(request, f"{type(e).__name__}: {e}", 409, back)
        return RedirectResponse(f"{back}?{urlencode({'done': did})}", status_code=303)


async def _perform(client: Client, action: str, iid: str, form: dict[str, str], data: Any) -> None:
    calls: dict[str, Callable[[], Awaitable[None]]] = {
        "raise-event": lambda: client.raise_orchestration_event(iid, form["event"], data=data),
        "terminate": lambda: client.terminate_orchestration(iid, output=data),
        "suspend": lambda: client.suspend_orchestration(iid, reason=form.get("reason") or None),
        "resume": lambda: client.resume_orchestration(iid, reason=form.get("reason") or None),
        "rewind": lambda: client.rewind_orchestration(iid, reason=form.get("reason") or None),
    }
    await calls[action]()


def _action_forms(root: str, state: OrchestrationState, token: str) -> str:
    """A form per action that applies to the instance now (each asks to confirm)."""
    target = html.instance_href(root, state.instance_id)
    hidden = f'<input type="hidden" name="token" value="{html.esc(token)}">'
    forms = []
    for action, (statuses, _, _) in _ACTIONS.items():
        if state.runtime_status not in statuses:
            continue
        fields = ""
        if action == "raise-event":
            fields = (
                '<input name="event" placeholder="event name" required> '
                '<input name="data" placeholder="data (JSON)"> '
            )
        elif action == "terminate":
            fields = '<input name="data" placeholder="output (JSON)"> '
        else:
            fields = '<input name="reason" placeholder="reason"> '
        label = action.replace("-", " ").capitalize()
        forms.append(
            f'<form class="inline" id="action-{action}" method="post"'
            f' action="{html.esc(target)}/{action}">{hidden}{fields}'
            f"<button>{html.esc(label)}</button></form>"
        )
    return "".join(forms) or "<p>None: the instance has finished.</p>"
