// edit_video.js: the owner changes a video's caption, who can watch it and comments. The form
// (templates/_edit_video.html) posts to the page route without JavaScript; here it is sent to
// the API instead (PATCH /api/v1/videos/<id>) and the part of the page it changed is fetched
// again and swapped in place: the video's page, or the one item of "Your videos".
(function () {
  "use strict";
  var MAX_CAPTION = 2200;

  function length(text) {
    return Array.from(text).length; // characters, as the server counts them
  }

  function showCount(form) {
    var caption = form.elements.caption;
    var counter = document.getElementById(caption.getAttribute("aria-describedby"));
    if (!counter) return;
    var n = length(caption.value);
    counter.querySelector(".caption-used").textContent = String(n);
    counter.classList.toggle("over", n > MAX_CAPTION);
  }

  function showError(form, message) {
    var box = form.querySelector(".edit-error");
    box.textContent = message;
    box.hidden = !message;
  }

  function lock(form, locked) {
    Array.prototype.forEach.call(form.elements, function (input) {
      input.disabled = locked;
    });
  }

  function patch(form) {
    var body = {
      caption: form.elements.caption.value,
      visibility: form.elements.visibility.value,
      allow_comments: form.elements.allow_comments.checked,
    };
    return fetch(form.dataset.api, {
      method: "PATCH",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": reelm.csrf() },
      body: JSON.stringify(body),
    }).then(
      function (response) {
        if (response.ok) return response.json();
        return reelm.problemDetail(response, "The changes were not saved. Reload the page and try again.")
          .then(function (message) {
            throw new Error(message);
          });
      },
      function () {
        throw new Error("Cannot reach reelm. Check your connection and try again.");
      }
    );
  }

  // The server's rendering of what changed, read from the page it came from.
  function fresh(form) {
    return fetch(form.dataset.refresh, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        return new DOMParser().parseFromString(html, "text/html");
      });
  }

  function sources(root) {
    var player = root.querySelector(".player");
    if (!player) return "";
    var video = player.querySelector("video");
    var urls = Array.prototype.map.call(player.querySelectorAll("source"), function (s) {
      return s.getAttribute("src");
    });
    return [player.className, video ? video.getAttribute("poster") : ""].concat(urls.sort()).join(" ");
  }

  // Swap the edited part in. On a video's page the player stays (and keeps playing) unless its
  // files moved: a video made private or public is served from another place.
  function swap(form, doc) {
    var selector = form.dataset.swap;
    var old = document.querySelector(selector);
    var next = doc.querySelector(selector);
    if (!old || !next) return null;
    next = document.importNode(next, true);
    var oldPlayer = old.querySelector(".player");
    if (oldPlayer && sources(old) === sources(next)) {
      next.replaceChild(oldPlayer, next.querySelector(".player"));
    }
    old.replaceWith(next);
    var video = next.querySelector("video.watch-video");
    if (video && video !== (oldPlayer && oldPlayer.querySelector("video"))) {
      reelm.pickSource(video);
      video.preload = "metadata";
    }
    if (selector === ".watch" && doc.title) document.title = doc.title;
    return next;
  }

  function save(form) {
    if (form.dataset.saving) return;
    var caption = form.elements.caption;
    if (length(caption.value) > MAX_CAPTION) {
      showError(form, "The caption is too long: at most " + MAX_CAPTION + " characters.");
      caption.focus();
      return;
    }
    showError(form, "");
    form.dataset.saving = "true";
    lock(form, true);
    patch(form)
      .then(
        function () {
          return fresh(form).then(
            function (doc) {
              var swapped = swap(form, doc);
              if (!swapped) return window.location.reload();
              reelm.toast("Changes saved");
              var edit = swapped.querySelector(".edit-video > summary");
              if (edit) edit.focus();
            },
            function () {
              window.location.reload(); // saved, but the page could not be fetched: load it
            }
          );
        },
        function (err) {
          lock(form, false);
          showError(form, err.message);
          caption.focus();
        }
      )
      .finally(function () {
        delete form.dataset.saving;
      });
  }

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLTextAreaElement)) return;
    var form = target.closest("form.edit-video-form");
    if (form) showCount(form);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("edit-video-form")) return;
    if (!form.dataset.swap) return; // the edit page on its own: a plain form post
    event.preventDefault();
    save(form);
  });

  // Opening the form puts the cursor in the caption; closing it forgets what was typed.
  document.addEventListener(
    "toggle",
    function (event) {
      var details = event.target;
      if (!(details instanceof HTMLDetailsElement) || !details.classList.contains("edit-video")) return;
      var form = details.querySelector("form.edit-video-form");
      if (!form) return;
      if (details.open) {
        form.elements.caption.focus();
      } else if (!form.dataset.saving) {
        form.reset();
        showError(form, "");
        showCount(form);
      }
    },
    true // toggle does not bubble
  );
})();
