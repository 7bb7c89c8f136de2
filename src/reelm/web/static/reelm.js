// reelm.js: small helpers the pages share. No inline scripts anywhere: the Content-Security-Policy
// only runs files from this site, so data reaches scripts through data- attributes and <meta>.
(function () {
  "use strict";
  var reelm = (window.reelm = window.reelm || {});

  // The page's CSRF token: API writes made with the session cookie must carry it in a header.
  reelm.csrf = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };

  var toastTimer = null;
  reelm.toast = function (message) {
    var toast = document.getElementById("toast");
    if (!toast) return;
    // The live region stays in the page (a hidden one is not announced): only its text and
    // its visibility change.
    toast.textContent = message;
    toast.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () {
      toast.classList.remove("show");
      toast.textContent = "";
    }, 3500);
  };

  reelm.absolute = function (url) {
    return new URL(url, window.location.href).href;
  };

  // A sentence for people: "videos are limited to 500 MB" -> "Videos are limited to 500 MB."
  reelm.sentence = function (text) {
    text = String(text || "").trim();
    if (!text) return text;
    text = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?…]$/.test(text) ? text : text + ".";
  };

  // The `detail` of an RFC 9457 problem (the API's errors), or the fallback.
  reelm.problemText = function (text, fallback) {
    try {
      var body = JSON.parse(text);
      if (body && /\/csrf-failed$/.test(body.type || "")) {
        return "This page has expired. Reload it and try again.";
      }
      if (body && typeof body.detail === "string" && body.detail) return reelm.sentence(body.detail);
    } catch (e) {
      /* not JSON: a proxy's page, say */
    }
    return fallback;
  };

  reelm.problemDetail = function (response, fallback) {
    return response.text().then(
      function (text) {
        return reelm.problemText(text, fallback);
      },
      function () {
        return fallback;
      }
    );
  };

  reelm.copy = function (text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(
        function () {
          return true;
        },
        function () {
          return legacyCopy(text);
        }
      );
    }
    return Promise.resolve(legacyCopy(text));
  };

  function legacyCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (e) {
      copied = false;
    }
    area.remove();
    return copied;
  }

  // Share a link: the system's share sheet where there is one, else copy it.
  reelm.share = function (url, title) {
    var link = reelm.absolute(url);
    if (navigator.share) {
      return navigator.share({ title: title || "reelm", url: link }).catch(function (err) {
        if (err && err.name === "AbortError") return; // the viewer closed the sheet
        return copyWithToast(link);
      });
    }
    return copyWithToast(link);
  };

  function copyWithToast(link) {
    return reelm.copy(link).then(function (copied) {
      reelm.toast(copied ? "Link copied: " + link : "Copy this link: " + link);
    });
  }

  // Put first the rendition that fits the element on this screen (sources come largest first;
  // the browser plays the first it can): no 1080p for a phone showing 390 pixels across.
  reelm.pickSource = function (video) {
    var sources = Array.prototype.slice.call(video.querySelectorAll("source"));
    if (sources.length < 2) return;
    var box = video.getBoundingClientRect();
    var boxWidth = box.width || window.innerWidth;
    var boxHeight = box.height || window.innerHeight;
    var width = Number(video.getAttribute("width")) || 9;
    var height = Number(video.getAttribute("height")) || 16;
    var scale = Math.min(boxWidth / width, boxHeight / height);
    var ratio = Math.min(window.devicePixelRatio || 1, 2);
    var needed = Math.min(width, height) * scale * ratio * 0.9;
    var chosen = sources[0];
    sources.forEach(function (source) {
      var short = Math.min(Number(source.dataset.width), Number(source.dataset.height));
      if (short >= needed) chosen = source; // later ones are smaller: the last that fits wins
    });
    if (chosen !== sources[0]) {
      video.insertBefore(chosen, sources[0]);
      video.load();
    }
  };

  // A followers-only or private video's files have URLs signed for this session that last a
  // few minutes (reelm.media.serving). When one stops working (the page sat past its life, or
  // a long video asks for more bytes after it), ask the API for fresh ones and carry on from
  // where the video was; when the API says the video is no longer shared, say so.
  var RENEW_GAP = 10000; // ms between two renewals at most: a refused renewal cannot loop
  reelm.renewSources = function (video) {
    var url = video.dataset.renew;
    if (!url) return;
    var last = 0;

    function gone() {
      var note = document.createElement("p");
      note.className = "notice error renew-gone";
      note.textContent = "This video is no longer shared with you.";
      video.replaceWith(note);
    }

    function resume(card, at, playing) {
      video.querySelectorAll("source").forEach(function (source) {
        source.remove();
      });
      var fallback = video.querySelector("p"); // the text for browsers without video
      card.sources.forEach(function (s) {
        var source = document.createElement("source");
        source.src = s.url;
        source.type = s.type;
        source.dataset.width = s.width;
        source.dataset.height = s.height;
        video.insertBefore(source, fallback);
      });
      if (card.poster_url) video.poster = card.poster_url;
      video.addEventListener(
        "loadedmetadata",
        function () {
          if (at) video.currentTime = at;
          if (playing) video.play().catch(function () {});
        },
        { once: true }
      );
      video.load();
      reelm.pickSource(video);
    }

    function renew() {
      var now = Date.now();
      if (now - last < RENEW_GAP) return;
      last = now;
      var at = video.currentTime;
      var playing = !video.paused;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 401 || response.status === 404) return null;
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (card) {
          if (!card || !card.sources || !card.sources.length) gone();
          else resume(card, at, playing);
        })
        .catch(function () {
          reelm.toast("The video stopped loading. Check your connection and reload the page.");
        });
    }

    // A <source>'s error does not bubble: it is caught on its way down, in the capture phase.
    video.addEventListener(
      "error",
      function (event) {
        if (event.target === video || event.target.tagName === "SOURCE") renew();
      },
      true
    );
  };

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var share = target.closest("button.share");
    if (share) {
      event.preventDefault();
      reelm.share(share.dataset.url, share.dataset.title);
      return;
    }
    var copy = target.closest("button[data-copy]");
    if (copy) {
      var input = document.querySelector(copy.dataset.copy);
      if (!input) return;
      input.select();
      reelm.copy(input.value).then(function (copied) {
        reelm.toast(copied ? "Link copied" : "Select the link and copy it");
      });
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (navigator.share) {
      document.querySelectorAll(".share.native-only").forEach(function (button) {
        button.hidden = false;
      });
    }
    document.querySelectorAll("video.watch-video").forEach(function (video) {
      reelm.renewSources(video);
      reelm.pickSource(video);
      video.preload = "metadata";
    });
  });
})();
