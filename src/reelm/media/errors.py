"""Why an uploaded file is not accepted as a video. Each rejection has a stable slug (the API turns
it into problem+json), an HTTP status and a human message (``detail``) that says what is wrong
with this file and, where it helps, what to do instead. Messages never quote the file's
metadata (it may hold GPS coordinates) nor any server path."""

from __future__ import annotations


class MediaRejected(Exception):
    """A file the platform will not take as a video. Subclasses name the reason."""

    slug = "media-rejected"
    status = 422
    title = "Video rejected"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = "file"


class EmptyFile(MediaRejected):
    slug = "empty-file"
    title = "The file is empty"


class NotAVideo(MediaRejected):
    slug = "not-a-video"
    title = "Not a video file"


class TruncatedVideo(MediaRejected):
    slug = "truncated-video"
    title = "The video file is incomplete"


class ImageNotVideo(MediaRejected):
    slug = "image-not-video"
    title = "An image, not a video"


class AudioNotVideo(MediaRejected):
    slug = "audio-not-video"
    title = "Sound only, no picture"


class NoVideoStream(MediaRejected):
    slug = "no-video-stream"
    title = "No video in the file"


class UndecodableVideo(MediaRejected):
    slug = "undecodable-video"
    title = "The video cannot be decoded"


class UndecodableAudio(MediaRejected):
    slug = "undecodable-audio"
    title = "The sound cannot be decoded"


class UnsupportedContainer(MediaRejected):
    slug = "unsupported-container"
    title = "Unsupported file format"


class UnsupportedDimensions(MediaRejected):
    slug = "unsupported-dimensions"
    title = "Unsupported picture size"


class UnsupportedFrameRate(MediaRejected):
    slug = "unsupported-frame-rate"
    title = "Unsupported frame rate"


class VideoTooLong(MediaRejected):
    slug = "video-too-long"
    title = "Video too long"


class VideoTooShort(MediaRejected):
    slug = "video-too-short"
    title = "Video too short"


class VideoTooLarge(MediaRejected):
    slug = "video-too-large"
    status = 413
    title = "Video file too large"


class VideoTooDemanding(MediaRejected):
    """Zip-bomb-like input: processing it would cost far more than its size or limits allow."""

    slug = "video-too-demanding"
    title = "Video too demanding to process"


REJECTIONS: tuple[type[MediaRejected], ...] = (
    EmptyFile,
    NotAVideo,
    TruncatedVideo,
    ImageNotVideo,
    AudioNotVideo,
    NoVideoStream,
    UndecodableVideo,
    UndecodableAudio,
    UnsupportedContainer,
    UnsupportedDimensions,
    UnsupportedFrameRate,
    VideoTooLong,
    VideoTooShort,
    VideoTooLarge,
    VideoTooDemanding,
)

# slug -> (status, title), merged into reelm.api.problems.PROBLEM_TYPES.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    cls.slug: (cls.status, cls.title) for cls in REJECTIONS
}
