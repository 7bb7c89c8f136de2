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
      reelm.pickSource(video);
      video.preload = "metadata";
    });
  });
})();
