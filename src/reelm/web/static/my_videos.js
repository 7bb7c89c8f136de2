// my_videos.js: your videos without reloading. Delete asks first, then calls the API; Retry
// calls the API; while a video is uploading or being processed, the list refreshes itself.
(function () {
  "use strict";
  var root = document.getElementById("my-videos");
  if (!root) return;

  var REFRESH_MS = 2000;
  var timer = null;

  function busy() {
    var list = root.querySelector(".my-videos");
    return !!list && list.dataset.busy === "true";
  }

  function occupied() {
    return !!root.querySelector(".confirm, details.edit-video[open]");
  }

  function schedule() {
    clearTimeout(timer);
    if (busy()) timer = setTimeout(refresh, REFRESH_MS);
  }

  function refresh() {
    // Not while someone is answering "Delete for good?" or editing a video: the list would
    // change under them.
    if (occupied()) return schedule();
    fetch(root.dataset.refresh, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected) {
          // Signed out meanwhile (the list answers with the log-in page): show that page.
          window.location.reload();
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null || occupied()) return;
        replace(html);
      })
      .catch(function () {
        /* offline for a moment: try again on the next tick */
      })
      .finally(schedule);
  }

  // Swap the list, keeping the keyboard focus on the same item's same control.
  function replace(html) {
    var focused = document.activeElement;
    var item = focused && root.contains(focused) ? focused.closest(".my-video") : null;
    var key = item ? item.dataset.id : null;
    var kind = focused ? focused.textContent.trim() : null;
    root.innerHTML = html;
    if (key) {
      var again = root.querySelector('.my-video[data-id="' + key + '"]');
      var target = again
        ? Array.prototype.find.call(again.querySelectorAll("a, button, summary"), function (el) {
            return el.textContent.trim() === kind;
          })
        : null;
      if (target) target.focus();
    }
  }

  function api(url, method, what) {
    var headers = { "X-CSRF-Token": reelm.csrf() };
    if (what === "upload") headers["Tus-Resumable"] = "1.0.0";
    return fetch(url, { method: method, credentials: "same-origin", headers: headers }).then(
      function (response) {
        if (response.ok) return response;
        return reelm.problemDetail(response, "That did not work. Reload the page and try again.")
          .then(function (message) {
            throw new Error(message);
          });
      },
      function () {
        throw new Error("Cannot reach reelm. Check your connection and try again.");
      }
    );
  }

  function showFailure(item, message) {
    var box = item.querySelector(".action-error");
    if (!box) {
      box = document.createElement("p");
      box.className = "error action-error";
      box.setAttribute("role", "alert");
      item.querySelector(".my-body").appendChild(box);
    }
    box.textContent = message;
  }

  function askToDelete(form) {
    var item = form.closest(".my-video");
    var what = form.dataset.what;
    var actions = form.closest(".my-actions");
    if (actions.querySelector(".confirm")) return;
    actions.hidden = true;
    var confirm = document.createElement("div");
    confirm.className = "confirm";
    confirm.setAttribute("role", "group");
    confirm.setAttribute("aria-label", "Confirm deletion");
    var question = document.createElement("p");
    question.textContent =
      what === "upload"
        ? "Cancel this upload? What was sent so far is discarded."
        : "Delete this video for good? Its files and the original go too.";
    var yes = document.createElement("button");
    yes.type = "button";
    yes.className = "button small danger";
    yes.textContent = what === "upload" ? "Yes, cancel it" : "Yes, delete";
    var no = document.createElement("button");
    no.type = "button";
    no.className = "button small secondary";
    no.textContent = "Keep it";
    confirm.append(question, yes, " ", no);
    actions.after(confirm);
    no.focus();

    no.addEventListener("click", function () {
      confirm.remove();
      actions.hidden = false;
      form.querySelector("button").focus();
    });
    yes.addEventListener("click", function () {
      yes.disabled = no.disabled = true;
      api(form.dataset.api, "DELETE", what).then(
        function () {
          var list = item.parentElement;
          item.remove();
          reelm.toast(what === "upload" ? "Upload cancelled" : "Video deleted");
          if (list && !list.querySelector(".my-video")) refresh();
          var heading = document.querySelector("main h1");
          if (heading) {
            heading.setAttribute("tabindex", "-1");
            heading.focus();
          }
        },
        function (err) {
          confirm.remove();
          actions.hidden = false;
          showFailure(item, err.message);
        }
      );
    });
  }

  function retry(form) {
    var item = form.closest(".my-video");
    var button = form.querySelector("button");
    button.disabled = true;
    api(form.dataset.api, "POST").then(
      function () {
        reelm.toast("Trying again");
        refresh();
      },
      function (err) {
        button.disabled = false;
        showFailure(item, err.message);
      }
    );
  }

  root.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.classList.contains("delete-form")) {
      event.preventDefault();
      askToDelete(form);
    } else if (form.classList.contains("retry-form")) {
      event.preventDefault();
      retry(form);
    }
  });

  schedule();
})();
