// feed.js: the swipe feed. The page works without it (each video has its own controls and a
// "More videos" link pages on); with it, the video on screen plays muted, a tap turns the sound
// on or off, only that video plays, the next one is preloaded and more arrive as you scroll.
(function () {
  "use strict";
  var feed = document.getElementById("feed");
  if (!feed || !("IntersectionObserver" in window)) return;

  var VISIBLE = 0.6; // the share of a reel on screen that makes it the one playing
  var muted = true; // one choice for the whole feed, as people expect
  var current = null;
  var loading = false;

  // ---- watch signals: what the viewer did with each video, for their For You feed ----------
  // Sent to /api/v1/signals (stored in the viewer's home region only) when a video leaves the
  // screen, in small batches, and always before the next page is asked for: it reflects them.
  var signedIn = !!document.querySelector(".notes-link");
  var pending = [];
  var watching = null; // {id, seconds, last, loops, duration}

  function startWatch(article) {
    var video = videoOf(article);
    watching = { id: article.dataset.id, seconds: 0, last: video.currentTime, loops: 0, video: video };
  }

  function tick(video) {
    if (!watching || watching.video !== video) return;
    var now = video.currentTime;
    var delta = now - watching.last;
    if (delta > 0 && delta < 1.5) watching.seconds += delta;
    // The feed loops its videos: a jump back near the start after the end is one full view.
    if (delta < -0.5 && video.duration && watching.last > video.duration - 1.5) watching.loops += 1;
    watching.last = now;
  }

  function endWatch() {
    if (!watching || !signedIn) {
      watching = null;
      return;
    }
    var duration = watching.video.duration || 0;
    var completed = watching.loops > 0;
    var floor = duration ? Math.min(2, duration * 0.25) : 2;
    pending.push({
      video_id: watching.id,
      watched_seconds: Math.round(Math.min(watching.seconds, 3600) * 100) / 100,
      completed: completed,
      replayed: watching.loops > 1,
      skipped: !completed && watching.seconds < floor,
    });
    watching = null;
    if (pending.length >= 5) flush();
  }

  function flush() {
    if (!pending.length) return Promise.resolve();
    var events = pending.splice(0, 100);
    return fetch("/api/v1/signals", {
      method: "POST",
      credentials: "same-origin",
      keepalive: true,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": reelm.csrf() },
      body: JSON.stringify({ events: events }),
    }).catch(function () {});
  }

  setInterval(flush, 10000);
  window.addEventListener("pagehide", function () {
    endWatch();
    flush();
  });

  function reels() {
    return Array.prototype.slice.call(feed.querySelectorAll("article.reel[data-id]"));
  }

  function videoOf(article) {
    return article.querySelector("video");
  }

  function updateSound(article) {
    var button = article.querySelector(".reel-sound");
    if (!button) return;
    button.textContent = muted ? "Tap to unmute" : "Mute";
    button.classList.toggle("on", !muted);
  }

  function toggleSound(event) {
    if (event) event.preventDefault();
    muted = !muted;
    reels().forEach(function (article) {
      videoOf(article).muted = muted;
      updateSound(article);
    });
    if (current) {
      var video = videoOf(current);
      if (video.paused) play(video);
    }
  }

  function play(video) {
    var started = video.play();
    if (started && started.catch) {
      started.catch(function (err) {
        // The browser refused to start it on its own: let the viewer press play.
        if (err && err.name === "NotAllowedError") video.controls = true;
      });
    }
  }

  var visible = new IntersectionObserver(
    function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting && entry.intersectionRatio >= VISIBLE) {
          activate(entry.target);
        } else if (entry.target === current) {
          videoOf(current).pause();
          endWatch();
          current = null;
        }
      });
    },
    { root: feed, threshold: [0, VISIBLE, 1] }
  );

  function activate(article) {
    if (current === article) return;
    endWatch();
    current = article;
    startWatch(article);
    var list = reels();
    var index = list.indexOf(article);
    list.forEach(function (other, i) {
      var video = videoOf(other);
      if (other === article) return;
      if (!video.paused) video.pause();
      // Next one: fetched now so the swipe shows it at once. Near ones: their size only.
      video.preload = i === index + 1 ? "auto" : Math.abs(i - index) <= 2 ? "metadata" : "none";
    });
    var video = videoOf(article);
    video.preload = "auto";
    video.muted = muted;
    play(video);
    var next = list[index + 1];
    if (next) {
      var upcoming = videoOf(next);
      // A fetch that preload="none" suspended does not resume in every browser: start it.
      if (upcoming.readyState === 0 && upcoming.networkState !== HTMLMediaElement.NETWORK_LOADING) {
        upcoming.load();
      }
    }
  }

  function setup(article) {
    if (article.dataset.enhanced) return;
    article.dataset.enhanced = "1";
    var video = videoOf(article);
    if (!video) return;
    video.controls = false;
    video.muted = muted;
    reelm.pickSource(video);
    var sound = article.querySelector(".reel-sound");
    if (sound) {
      sound.hidden = false;
      sound.addEventListener("click", toggleSound);
    }
    video.addEventListener("click", toggleSound);
    video.addEventListener("timeupdate", function () {
      tick(video);
    });
    updateSound(article);
    visible.observe(article);
  }

  // ---- more videos as the end comes near ----------------------------------------------------

  var nearEnd = new IntersectionObserver(
    function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) loadMore(entry.target);
      });
    },
    { root: feed, rootMargin: "0px 0px 150% 0px" }
  );

  function watchEnd() {
    var end = feed.querySelector(".reel-end[data-next]");
    if (end) nearEnd.observe(end);
  }

  function loadMore(end) {
    if (loading || !end.dataset.next) return;
    loading = true;
    nearEnd.unobserve(end);
    feed.setAttribute("aria-busy", "true");
    flush()
      .then(function () {
        return fetch(end.dataset.next, { credentials: "same-origin", headers: { Accept: "text/html" } });
      })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var template = document.createElement("template");
        template.innerHTML = html;
        var seen = {};
        reels().forEach(function (article) {
          seen[article.dataset.id] = true;
        });
        template.content.querySelectorAll("article.reel[data-id]").forEach(function (article) {
          if (seen[article.dataset.id]) article.remove();
        });
        end.replaceWith(template.content);
        reels().forEach(setup);
        watchEnd();
      })
      .catch(function () {
        reelm.toast("Could not load more videos. Scroll again to retry.");
        setTimeout(function () {
          nearEnd.observe(end);
        }, 3000);
      })
      .finally(function () {
        loading = false;
        feed.setAttribute("aria-busy", "false");
      });
  }

  // ---- the rest -----------------------------------------------------------------------------

  document.addEventListener("visibilitychange", function () {
    if (!current) return;
    if (document.hidden) videoOf(current).pause();
    else play(videoOf(current));
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
    if (event.key === "m" || event.key === "M") toggleSound(event);
  });

  reels().forEach(setup);
  watchEnd();
})();
