// social.js: likes and shares without a page load. Every button is also a plain form (or a
// link) that works without this script; here the form's POST becomes an API call with the
// page's CSRF token, and the count changes in place.
(function () {
  "use strict";
  var signedIn = !!document.querySelector(".notes-link");

  function api(method, url) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": reelm.csrf() },
    });
  }

  function short(n) {
    if (n >= 1000000) return (n / 1000000).toFixed(1) + "M";
    if (n >= 10000) return Math.floor(n / 1000) + "K";
    if (n >= 1000) return (n / 1000).toFixed(1) + "K";
    return String(n);
  }

  function showLike(button, liked, likes) {
    button.classList.toggle("on", liked);
    button.setAttribute("aria-pressed", liked ? "true" : "false");
    button.value = liked ? "unlike" : "like";
    button.setAttribute("aria-label", (liked ? "Unlike" : "Like") + " (" + likes + " likes)");
    var n = button.querySelector(".n");
    if (n) n.textContent = short(likes);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("like-form")) return;
    var button = form.querySelector("button.like");
    if (!button || !signedIn) return; // the form goes to the log-in page
    event.preventDefault();
    var liking = button.value !== "unlike";
    var url = "/api/v1/videos/" + button.dataset.video + "/like";
    button.disabled = true;
    api(liking ? "POST" : "DELETE", url)
      .then(function (response) {
        if (!response.ok) {
          return reelm.problemDetail(response, "Could not save your like.").then(function (text) {
            reelm.toast(text);
          });
        }
        return response.json().then(function (body) {
          showLike(button, body.liked, body.likes);
        });
      })
      .catch(function () {
        reelm.toast("Could not save your like. Check your connection.");
      })
      .finally(function () {
        button.disabled = false;
      });
  });

  // A share counts once the link is out (reelm.js copies it or opens the share sheet).
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var share = target && target.closest("button.share[data-video]");
    if (!share || !signedIn || share.dataset.counted) return;
    share.dataset.counted = "1";
    api("POST", "/api/v1/videos/" + share.dataset.video + "/share")
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        var n = share.querySelector(".n");
        if (body && n) n.textContent = short(body.shares);
      })
      .catch(function () {});
  });
})();
