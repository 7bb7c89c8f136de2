"""The video pages: the swipe feed at "/", uploading, your videos, a video, a hashtag.

Pages read through :mod:`reelm.media.catalog` directly; the scripts in ``static/`` talk to the
JSON API (tus uploads, polling, retry and delete) with the page's CSRF token in a header. Every
page works without JavaScript as far as it can: the feed and grids page with links, deleting and
retrying are plain forms, and the feed's videos keep their native controls.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from reelm.accounts import lifecycle
from reelm.accounts.errors import AccountError, InvalidInput, NotFound, RateLimited
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media import catalog, uploads, videos
from reelm.media.captions import fold_tag, segments
from reelm.media.catalog import VideoCard
from reelm.web.pages import FormError, Pages, templates

FEED_PAGE = 5  # videos per feed page: a few screens ahead of the viewer
FEED_PATHS = {"for-you": "/", "following": "/following", "newest": "/newest"}
GRID_PAGE = 24
IN_PROGRESS = ("uploading", "queued", "processing")
MAX_CAPTION = 2200  # as media.videos.VideoUpdate and the upload page
ACCEPT = "video/mp4,video/quicktime,video/webm,video/x-matroska,.mp4,.mov,.m4v,.webm,.mkv"

TAG_LINK = Markup('<a class="tag" href="/tag/{}">{}</a>')  # format() escapes what it fills in
MENTION_LINK = Markup('<a class="mention" href="/@{}">{}</a>')


def caption_html(card: VideoCard) -> Markup:
    """The caption, escaped, with its hashtags linking to /tag/<tag> and its mentions to the
    profile (those the API lists: the first 30 tags and 20 mentions)."""
    tags, mentions = set(card.hashtags), set(card.mentions)
    out: list[Markup] = []
    for part in segments(card.caption):
        if part.kind == "tag" and part.target in tags:
            out.append(TAG_LINK.format(quote(part.target, safe=""), part.text))
        elif part.kind == "mention" and part.target in mentions:
            out.append(MENTION_LINK.format(quote(part.target, safe=""), part.text))
        else:
            out.append(escape(part.text))
    return Markup("").join(out)


def duration_label(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = max(0, round(seconds))
    return f"{total // 60}:{total % 60:02d}"


def status_label(card: VideoCard) -> str:
    if card.status == "uploading":
        return f"Uploading {card.progress}%"
    if card.status == "processing":
        return f"Processing {card.progress}%"
    return {"queued": "Queued", "ready": "Ready", "failed": "Failed"}.get(card.status, card.status)


def visibility_label(visibility: str) -> str:
    return {"public": "Public", "followers": "Followers", "private": "Only you"}.get(
        visibility, visibility
    )


def alt_text(card: VideoCard) -> str:
    caption = " ".join(card.caption.split())
    if len(caption) > 120:
        caption = caption[:119] + "…"
    return caption or f"Video by @{card.author_handle}"


def reelm_sentence(text: str) -> str:
    """A refusal's detail as a sentence for a page."""
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else text


def _video_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw[:40])
    except ValueError:
        raise NotFound("no such video") from None


def _video_update(values: dict[str, str]) -> videos.VideoUpdate:
    """The change a posted edit form asks for. An unticked checkbox is not sent, so the form
    always means "comments off" without it."""
    change: dict[str, Any] = {"allow_comments": values.get("allow_comments") == "on"}
    if "caption" in values:
        change["caption"] = values["caption"]
    if "visibility" in values:
        change["visibility"] = values["visibility"]
    return videos.VideoUpdate.model_validate(change)


def _update_message(exc: ValidationError, values: dict[str, str]) -> str:
    """What was wrong with an edit, in a sentence."""
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    if field == "caption" and err["type"] == "string_too_long":
        used = len(values.get("caption", ""))
        return f"The caption is too long: at most {MAX_CAPTION} characters (this one has {used})."
    message = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
    return f"{field.capitalize()}: {message}." if field else f"{message}."


def _absolute(platform: Platform, path: str | None) -> str | None:
    """A link for other sites (share, Open Graph): on the configured public address, never on
    the Host the request named (a forged Host would otherwise land in link previews)."""
    if not path:
        return None
    return platform.settings.base_url() + path


def _og_source(card: VideoCard) -> catalog.Source | None:
    """The rendition link previews embed: the smallest, which every player copes with."""
    return card.sources[-1] if card.sources else None


def install(app: FastAPI, platform: Platform, pages: Pages) -> None:
    env = templates.env
    env.filters["caption_html"] = caption_html
    env.filters["duration"] = duration_label
    env.globals["status_label"] = status_label
    env.globals["visibility_label"] = visibility_label
    env.globals["alt_text"] = alt_text

    def viewer(request: Request) -> CurrentUser | None:
        user: CurrentUser | None = getattr(request.state, "user", None)
        return user

    # ---- the feed ----------------------------------------------------------------------------

    def feed_page(request: Request, kind: str, cursor: str | None) -> catalog.Page:
        from reelm.feed import service as feeds

        user = viewer(request)
        market = getattr(request.state, "market", None)
        if kind == "following" and user is not None:
            return catalog.following_feed(platform, user, cursor=cursor, limit=FEED_PAGE)
        if kind == "newest":
            return catalog.feed(platform, user, cursor=cursor, limit=FEED_PAGE, market=market)
        return feeds.for_you(platform, user, cursor=cursor, limit=FEED_PAGE, market=market)

    def render_feed(request: Request, kind: str) -> Response:
        if kind == "following" and viewer(request) is None:
            return RedirectResponse("/login?next=/following", status_code=303)
        cursor = request.query_params.get("cursor") or None
        page = feed_page(request, kind, cursor)
        return pages.render(
            request,
            "feed.html",
            reels=page.items,
            next_cursor=page.next_cursor,
            first_page=cursor is None,
            feed_kind=kind,
            feed_path=FEED_PATHS[kind],
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def for_you(request: Request) -> Response:
        """For You: ranked from the viewer's own signals, in the viewer's home region."""
        return render_feed(request, "for-you")

    @app.get("/following", response_class=HTMLResponse, include_in_schema=False)
    def following(request: Request) -> Response:
        return render_feed(request, "following")

    @app.get("/newest", response_class=HTMLResponse, include_in_schema=False)
    def newest(request: Request) -> Response:
        return render_feed(request, "newest")

    @app.get("/feed/more", response_class=HTMLResponse, include_in_schema=False)
    def feed_more(request: Request) -> Response:
        """The next few reels and the end marker, as an HTML fragment for feed.js."""
        kind = request.query_params.get("feed") or "newest"
        if kind not in FEED_PATHS:
            kind = "newest"
        cursor = request.query_params.get("cursor") or None
        page = feed_page(request, kind, cursor)
        response = pages.render(
            request,
            "_reels.html",
            reels=page.items,
            next_cursor=page.next_cursor,
            first_page=False,
            feed_kind=kind,
            feed_path=FEED_PATHS[kind],
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    # ---- uploading ---------------------------------------------------------------------------

    @app.get("/upload", response_class=HTMLResponse, include_in_schema=False)
    def upload_page(request: Request) -> Response:
        if viewer(request) is None:
            return RedirectResponse("/login?next=/upload", status_code=303)
        limit = platform.settings.max_upload_bytes
        return pages.render(
            request,
            "upload.html",
            max_bytes=limit,
            max_mb=limit // 1_000_000,
            accept=ACCEPT,
        )

    # ---- your videos -------------------------------------------------------------------------

    def my_videos_context(request: Request) -> dict[str, Any]:
        user = viewer(request)
        assert user is not None  # the routes send anonymous visitors to log in first
        cards = catalog.own_videos(platform, user)
        return {"cards": cards, "busy": any(c.status in IN_PROGRESS for c in cards)}

    @app.get("/me/videos", response_class=HTMLResponse, include_in_schema=False)
    def my_videos(request: Request) -> Response:
        if viewer(request) is None:
            return RedirectResponse("/login?next=/me/videos", status_code=303)
        return pages.render(
            request,
            "my_videos.html",
            deleted=request.query_params.get("deleted") == "1",
            edited=request.query_params.get("edited") == "1",
            **my_videos_context(request),
        )

    @app.get("/me/videos/list", response_class=HTMLResponse, include_in_schema=False)
    def my_videos_list(request: Request) -> Response:
        """The list alone, for my_videos.js to refresh it while videos are processed."""
        if viewer(request) is None:
            return RedirectResponse("/login?next=/me/videos", status_code=303)
        response = pages.render(request, "_my_videos_list.html", **my_videos_context(request))
        response.headers["Cache-Control"] = "no-store"
        return response

    async def owner_post(
        request: Request, video_id: str, failed: str
    ) -> tuple[CurrentUser, uuid.UUID, dict[str, str]] | Response:
        """A no-JavaScript form about one of the viewer's videos: who, which, and the checked
        form fields; or the response to send instead (log in first, or a bad form)."""
        user = viewer(request)
        if user is None:
            return RedirectResponse("/login?next=/me/videos", status_code=303)
        ident = _video_id(video_id)
        try:
            values = await pages.form(request)
        except FormError as exc:
            return pages.render(
                request, "error.html", status=exc.status, title=failed, detail=exc.message
            )
        return user, ident, values

    @app.post("/me/videos/{video_id}/delete", include_in_schema=False)
    async def delete_form(request: Request, video_id: str) -> Response:
        """Without JavaScript: ask, then delete a video or cancel an upload in progress."""
        posted = await owner_post(request, video_id, "Not deleted")
        if isinstance(posted, Response):
            return posted
        user, ident, values = posted
        card = await run_in_threadpool(catalog.get_video, platform, user, ident)
        if not card.mine:
            raise NotFound("no such video")
        if values.get("confirm") != "yes":
            return pages.render(request, "confirm_delete.html", card=card)
        if card.status == "uploading":
            await run_in_threadpool(uploads.terminate, platform, user, ident)
        else:
            await run_in_threadpool(videos.delete_video, platform, user, ident)
        return RedirectResponse("/me/videos?deleted=1", status_code=303)

    @app.post("/me/videos/{video_id}/retry", include_in_schema=False)
    async def retry_form(request: Request, video_id: str) -> Response:
        posted = await owner_post(request, video_id, "Not retried")
        if isinstance(posted, Response):
            return posted
        user, ident, _values = posted
        try:
            await run_in_threadpool(videos.retry_video, platform, user, ident)
        except AccountError as exc:
            return pages.render(
                request, "error.html", status=exc.status, title="Not retried", detail=exc.detail
            )
        return RedirectResponse("/me/videos", status_code=303)

    def own_card(user: CurrentUser, ident: uuid.UUID) -> VideoCard:
        """The viewer's own video (not an upload still arriving), or NotFound."""
        card = catalog.get_video(platform, user, ident)
        if not card.mine or card.status == "uploading":
            raise NotFound("no such video")
        return card

    @app.get("/me/videos/{video_id}/edit", response_class=HTMLResponse, include_in_schema=False)
    def edit_page(request: Request, video_id: str) -> Response:
        """The edit form on a page of its own: what the form posts back to on a mistake."""
        user = viewer(request)
        ident = _video_id(video_id)
        if user is None:
            return RedirectResponse(f"/login?next=/me/videos/{ident}/edit", status_code=303)
        back = "list" if request.query_params.get("back") == "list" else "video"
        return pages.render(request, "edit_video.html", card=own_card(user, ident), back=back)

    @app.post("/me/videos/{video_id}/edit", include_in_schema=False)
    async def edit_form(request: Request, video_id: str) -> Response:
        """Without JavaScript: change the caption, who can watch and comments, then go back to
        where the form was (the video's page or your videos) with a notice."""
        posted = await owner_post(request, video_id, "Not saved")
        if isinstance(posted, Response):
            return posted
        user, ident, values = posted
        if "caption" in values:  # browsers send a textarea's line breaks as CRLF
            values["caption"] = values["caption"].replace("\r\n", "\n")
        card = await run_in_threadpool(own_card, user, ident)
        back = "list" if values.get("back") == "list" else "video"
        try:
            change = _video_update(values)
            await run_in_threadpool(videos.update_video, platform, user, ident, change)
        except ValidationError as exc:
            return pages.render(
                request,
                "edit_video.html",
                status=422,
                card=card,
                back=back,
                values=values,
                error=_update_message(exc, values),
            )
        target = "/me/videos" if back == "list" else f"/v/{card.id}"
        return RedirectResponse(f"{target}?edited=1", status_code=303)

    # ---- one video ---------------------------------------------------------------------------

    def _comments_context(request: Request, card: VideoCard, public: bool) -> dict[str, Any]:
        """The comment sheet of a video's page: a page of comments, the thread asked for, and
        whether (or why not) the viewer may write one."""
        from reelm.social import comments

        if not public:
            return {"comments": None, "comment_note": "Comments are available on public videos."}
        user = viewer(request)
        market = getattr(request.state, "market", None)
        cursor = request.query_params.get("comments") or None
        try:
            page = comments.list_comments(platform, user, card.id, cursor=cursor, market=market)
        except InvalidInput:
            page = comments.list_comments(platform, user, card.id, market=market)
        thread: uuid.UUID | None = None
        replies: list[comments.CommentView] = []
        raw = request.query_params.get("thread")
        if raw:
            try:
                thread = uuid.UUID(raw[:40])
                replies = comments.list_comments(
                    platform, user, card.id, parent=thread, limit=50, market=market
                ).items
            except ValueError:
                thread = None
        note = None
        if user is None:
            note = "Log in to comment."
        else:
            try:
                catalog.check(platform, user, "comment", card.id, market=market)
            except AccountError as exc:
                note = reelm_sentence(exc.detail)
        return {
            "comments": page.items,
            "comments_next": page.next_cursor,
            "thread": thread,
            "replies": replies,
            "comment_note": note,
            "max_comment": comments.MAX_BODY,
        }

    @app.get("/v/{video_id}", response_class=HTMLResponse, include_in_schema=False)
    def video_page(request: Request, video_id: str) -> Response:
        try:
            by = request.query_params.get("by")
            author = lifecycle.public_profile(platform, by[:60]) if by else None
            card = catalog.get_video(
                platform,
                viewer(request),
                _video_id(video_id),
                market=getattr(request.state, "market", None),
                by=author,
            )
        except NotFound:
            return pages.render(
                request,
                "error.html",
                status=404,
                title="Video not found",
                detail="This video does not exist, was deleted, or is not shared with you.",
            )
        public = card.visibility == "public" and card.status == "ready"
        share = _absolute(platform, f"/v/{card.id}") if public else None
        og_source = _og_source(card) if public else None
        return pages.render(
            request,
            "video.html",
            **_comments_context(request, card, public),
            card=card,
            reported=request.query_params.get("reported") == "1",
            edited=card.mine and request.query_params.get("edited") == "1",
            share_url=share,
            og_image=_absolute(platform, card.poster_url) if public else None,
            og_video=og_source,
            og_video_url=_absolute(platform, og_source.url) if og_source else None,
        )

    # ---- search ------------------------------------------------------------------------------

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    def search_page(request: Request) -> Response:
        from reelm.search import service as search
        from reelm.search.text import MAX_QUERY

        query = (request.query_params.get("q") or "")[: MAX_QUERY * 2]
        cursor = request.query_params.get("cursor") or None
        values: dict[str, Any] = {
            "query": query.strip(),
            "max_query": MAX_QUERY,
            "results": None,
            "error": None,
        }
        if not query.strip():
            from reelm.feed import service as feeds

            market = getattr(request.state, "market", None)
            values["trending"] = feeds.trending_hashtags(platform, market, limit=12)
            return pages.render(request, "search.html", **values)
        try:
            platform.rate_limits.hit("search", request.client.host if request.client else "?")
            values["results"] = search.search(
                platform, viewer(request), query, cursor=cursor, limit=GRID_PAGE
            )
        except (InvalidInput, RateLimited) as exc:
            values["error"] = exc.detail
            status = 429 if isinstance(exc, RateLimited) else 422
            return pages.render(request, "search.html", status=status, **values)
        return pages.render(request, "search.html", **values)

    # ---- a hashtag ---------------------------------------------------------------------------

    @app.get("/tag/{tag}", response_class=HTMLResponse, include_in_schema=False)
    def hashtag(request: Request, tag: str) -> Response:
        folded = fold_tag(tag.lstrip("#"))[:100]
        cursor = request.query_params.get("cursor") or None
        page = catalog.hashtag_feed(
            platform, viewer(request), folded, cursor=cursor, limit=GRID_PAGE
        )
        return pages.render(
            request,
            "tag.html",
            tag=folded,
            videos=page.items,
            next_cursor=page.next_cursor,
            first_page=cursor is None,
        )
