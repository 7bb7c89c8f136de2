"""Pages and forms of the social features: likes, comments, follows, blocks, notifications.

Every action is a plain form that works without JavaScript (POST, CSRF token, then a redirect
back to where it came from); ``static/social.js`` turns the like, follow and comment forms into
API calls without a page load. Refusals come from reelm.social.access and are shown as
readable pages with the same status the API answers.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from reelm.accounts.errors import AccountError, NotFound
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.social import comments, graph, likes, moderation, notify
from reelm.web.pages import FormError, Pages, _safe_next, templates

NOTE_TEXT = {
    "follow": "started following you",
    "follow_request": "asked to follow you",
    "follow_accepted": "accepted your follow request",
    "like": "liked your video",
    "comment": "commented on your video",
    "reply": "replied to your comment",
    "mention": "mentioned you in a comment",
}


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw[:40])
    except ValueError:
        raise NotFound(f"no such {what}") from None


def install(app: FastAPI, platform: Platform, pages: Pages) -> None:
    templates.env.globals["note_text"] = NOTE_TEXT
    templates.env.globals["report_reasons"] = moderation.REASONS

    async def signed_in_form(
        request: Request, fallback: str
    ) -> tuple[CurrentUser, dict[str, str]] | Response:
        user: CurrentUser | None = getattr(request.state, "user", None)
        if user is None:
            return RedirectResponse(f"/login?next={fallback}", status_code=303)
        try:
            values = await pages.form(request)
        except FormError as exc:
            return pages.render(
                request, "error.html", status=exc.status, title="Not done", detail=str(exc)
            )
        return user, values

    def back(values: dict[str, str], fallback: str) -> RedirectResponse:
        return RedirectResponse(_safe_next(values.get("next")) or fallback, status_code=303)

    def refused(request: Request, exc: AccountError, title: str = "Not done") -> Response:
        return pages.render(
            request, "error.html", status=exc.status, title=title, detail=exc.detail
        )

    # ---- likes and comments ------------------------------------------------------------------

    @app.post("/v/{video_id}/like", include_in_schema=False)
    async def like_form(request: Request, video_id: str) -> Response:
        ident = _uuid(video_id, "video")
        posted = await signed_in_form(request, f"/v/{ident}")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        action = likes.unlike if values.get("action") == "unlike" else likes.like
        try:
            await run_in_threadpool(action, platform, user, ident)
        except AccountError as exc:
            return refused(request, exc, "Not liked")
        return back(values, f"/v/{ident}")

    @app.post("/v/{video_id}/comments", include_in_schema=False)
    async def comment_form(request: Request, video_id: str) -> Response:
        ident = _uuid(video_id, "video")
        posted = await signed_in_form(request, f"/v/{ident}")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        reply_to = values.get("reply_to") or None
        try:
            parent = _uuid(reply_to, "comment") if reply_to else None
            made = await run_in_threadpool(
                comments.add,
                platform,
                user,
                ident,
                values.get("body", "").replace("\r\n", "\n"),
                reply_to=parent,
            )
        except AccountError as exc:
            return refused(request, exc, "Comment not posted")
        thread = f"?thread={made.parent_id}" if made.parent_id else ""
        return RedirectResponse(f"/v/{ident}{thread}#c-{made.id}", status_code=303)

    @app.post("/comments/{comment_id}/delete", include_in_schema=False)
    async def delete_comment_form(request: Request, comment_id: str) -> Response:
        ident = _uuid(comment_id, "comment")
        posted = await signed_in_form(request, "/")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        try:
            await run_in_threadpool(comments.delete_comment, platform, user, ident)
        except AccountError as exc:
            return refused(request, exc, "Comment not deleted")
        return back(values, "/")

    # ---- follows and blocks ------------------------------------------------------------------

    async def toggle(
        request: Request,
        handle: str,
        off: str,
        actions: tuple[Any, Any],
        title: str,
        after: tuple[str, str],
    ) -> Response:
        """A profile button that does one thing or its opposite (``action=<off>``)."""
        handle = handle[:60]
        posted = await signed_in_form(request, f"/@{handle}")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        undo = values.get("action") == off
        try:
            await run_in_threadpool(actions[1] if undo else actions[0], platform, user, handle)
        except AccountError as exc:
            return refused(request, exc, title)
        return back(values, after[1] if undo else after[0])

    @app.post("/@{handle}/follow", include_in_schema=False)
    async def follow_form(request: Request, handle: str) -> Response:
        where = f"/@{handle[:60]}"
        pair = (graph.follow, graph.unfollow)
        return await toggle(request, handle, "unfollow", pair, "Not followed", (where, where))

    @app.post("/@{handle}/block", include_in_schema=False)
    async def block_form(request: Request, handle: str) -> Response:
        pair = (graph.block, graph.unblock)
        return await toggle(
            request, handle, "unblock", pair, "Not blocked", ("/", "/notifications")
        )

    @app.post("/requests/{handle}", include_in_schema=False)
    async def request_form(request: Request, handle: str) -> Response:
        posted = await signed_in_form(request, "/notifications")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        approve = values.get("action") == "approve"
        try:
            await run_in_threadpool(
                graph.answer_request, platform, user, handle[:60], approve=approve
            )
        except AccountError as exc:
            return refused(request, exc, "Not answered")
        return back(values, "/notifications")

    # ---- reports and moderation --------------------------------------------------------------

    @app.post("/report", include_in_schema=False)
    async def report_form(request: Request) -> Response:
        posted = await signed_in_form(request, "/")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        try:
            data = moderation.ReportIn(
                target=values.get("target", ""),
                id=values.get("id", "")[:60],
                reason=values.get("reason", ""),
                note=values.get("note", "")[:500],
            )
        except ValidationError:
            return pages.render(
                request,
                "error.html",
                status=422,
                title="Not reported",
                detail="Choose a reason from the list.",
            )
        try:
            await run_in_threadpool(moderation.report, platform, user, data)
        except AccountError as exc:
            return refused(request, exc, "Not reported")
        target = _safe_next(values.get("next")) or "/"
        joiner = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{joiner}reported=1", status_code=303)

    @app.get("/staff/moderation", response_class=HTMLResponse, include_in_schema=False)
    def moderation_page(request: Request) -> Response:
        user: CurrentUser | None = getattr(request.state, "user", None)
        if user is None:
            return RedirectResponse("/login?next=/staff/moderation", status_code=303)
        try:
            cases = moderation.queue(platform, user)
        except AccountError as exc:
            return refused(request, exc, "Staff only")
        return pages.render(
            request, "moderation.html", cases=cases, done=request.query_params.get("done")
        )

    @app.post("/staff/moderation", include_in_schema=False)
    async def moderation_form(request: Request) -> Response:
        posted = await signed_in_form(request, "/staff/moderation")
        if isinstance(posted, Response):
            return posted
        user, values = posted
        try:
            decision = moderation.Decision(
                target=values.get("target", ""),
                id=values.get("id", "")[:60],
                action=values.get("action", ""),
                reason=values.get("reason", ""),
                market=(values.get("market") or "").strip().upper() or None,
            )
        except ValidationError:
            return pages.render(
                request,
                "error.html",
                status=422,
                title="Not done",
                detail="Choose an action and a reason; a market is two capital letters (DE).",
            )
        try:
            done = await run_in_threadpool(moderation.act, platform, user, decision)
        except AccountError as exc:
            return refused(request, exc)
        return RedirectResponse(f"/staff/moderation?done={quote(done)}", status_code=303)

    # ---- notifications -----------------------------------------------------------------------

    @app.get("/notifications", response_class=HTMLResponse, include_in_schema=False)
    def notifications_page(request: Request) -> Response:
        user: CurrentUser | None = getattr(request.state, "user", None)
        if user is None:
            return RedirectResponse("/login?next=/notifications", status_code=303)
        context: dict[str, Any] = {
            "notes": notify.recent(platform, user),
            "requests": graph.requests(platform, user),
            "blocked": graph.blocked(platform, user),
        }
        return pages.render(request, "notifications.html", **context)
