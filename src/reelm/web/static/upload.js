// upload.js: send a video with tus 1.0 (https://tus.io/protocols/resumable-upload) in pieces,
// showing progress, speed and time left; resume after a dropped connection from the offset the
// server holds (HEAD); then follow the processing until the video is ready to watch.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;

  var TUS = "1.0.0";
  var MAX_CAPTION = 2200;
  var RETRY_DELAYS = [1000, 2000, 4000, 8000, 15000, 30000]; // then the viewer decides
  var STALL_MS = 30000; // no byte sent for this long: the connection is dead, start again
  var POLL_MS = 1000;

  var fileInput = document.getElementById("file");
  var caption = document.getElementById("caption");
  var used = document.getElementById("caption-used");
  var counter = document.getElementById("caption-count");
  var visibility = document.getElementById("visibility");
  var comments = document.getElementById("allow-comments");
  var startButton = document.getElementById("upload-start");
  var cancelButton = document.getElementById("upload-cancel");
  var errorBox = document.getElementById("upload-error");
  var box = document.getElementById("progress-box");
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var detail = document.getElementById("progress-detail");
  var done = document.getElementById("upload-done");
  var videoLink = document.getElementById("video-link");

  var active = null; // the upload in progress
  var paused = null; // an upload that gave up retrying: the Upload button resumes it

  // ---- the form ---------------------------------------------------------------------------

  function length(text) {
    return Array.from(text).length; // characters, as the server counts them
  }

  function showCount() {
    var n = length(caption.value);
    used.textContent = String(n);
    counter.classList.toggle("over", n > MAX_CAPTION);
  }

  function megabytes(bytes) {
    var mb = bytes / 1e6;
    return (mb < 10 ? mb.toFixed(1) : Math.round(mb)) + " MB";
  }

  function timeLeft(seconds) {
    seconds = Math.max(1, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function problemWithFile(file) {
    var maxBytes = Number(form.dataset.maxBytes);
    if (!file) return "Choose a video file to upload.";
    if (file.size === 0) return "This file is empty (0 bytes). Choose the video again.";
    if (file.size > maxBytes) {
      return (
        "This file is " + megabytes(file.size) + "; videos can be at most " +
        megabytes(maxBytes) + ". Trim it or export it at a lower quality, then try again."
      );
    }
    if (file.type && !/^video\//.test(file.type)) {
      return "This file is not a video (" + file.type + "). Choose an MP4, MOV, WebM or MKV video.";
    }
    return "";
  }

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  function setPhase(text) {
    if (status.textContent !== text) status.textContent = text;
  }

  function lockForm(locked) {
    [fileInput, caption, visibility, comments].forEach(function (input) {
      input.disabled = locked;
    });
    startButton.disabled = locked;
    startButton.hidden = locked; // while it runs, the one thing to do is Cancel
  }

  function guard(event) {
    event.preventDefault();
    event.returnValue = "";
  }

  function base64(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    bytes.forEach(function (b) {
      binary += String.fromCharCode(b);
    });
    return btoa(binary);
  }

  function metadata(values) {
    return Object.keys(values)
      .map(function (key) {
        return key + " " + base64(values[key]);
      })
      .join(",");
  }

  function headers(extra) {
    var all = { "Tus-Resumable": TUS, "X-CSRF-Token": reelm.csrf() };
    Object.keys(extra || {}).forEach(function (key) {
      all[key] = extra[key];
    });
    return all;
  }

  function wait(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }

  // ---- errors -----------------------------------------------------------------------------

  function Retryable(message) {
    this.message = message;
  }

  function Fatal(message) {
    this.message = message;
  }

  // ---- uploading --------------------------------------------------------------------------

  function begin(file) {
    var upload = {
      file: file,
      url: null,
      offset: 0,
      xhr: null,
      cancelled: false,
      samples: [],
      lastProgress: 0,
    };
    active = upload;
    paused = null;
    showError("");
    done.hidden = true;
    box.hidden = false;
    bar.value = 0;
    detail.textContent = "";
    setPhase("Starting the upload…");
    lockForm(true);
    cancelButton.hidden = false;
    window.addEventListener("beforeunload", guard);
    run(upload);
  }

  function run(upload) {
    send(upload).then(
      function (location) {
        if (!upload.cancelled) follow(upload, location);
      },
      function (err) {
        if (upload.cancelled) return;
        if (err instanceof Retryable) return giveUp(upload, err.message);
        stop(upload, err instanceof Fatal ? err.message : "The upload failed. Try again.");
      }
    );
  }

  // Create the upload (once), then send every piece; resolves with the video's API URL.
  async function send(upload) {
    var attempt = 0;
    for (;;) {
      if (upload.cancelled) return null;
      try {
        if (!upload.url) {
          await create(upload);
        } else if (upload.offset < upload.file.size) {
          var location = await sendPiece(upload);
          if (location) return location;
        } else {
          return await confirmFinished(upload);
        }
        attempt = 0;
      } catch (err) {
        if (!(err instanceof Retryable) || upload.cancelled) throw err;
        if (attempt >= RETRY_DELAYS.length) throw err;
        await countdown(upload, RETRY_DELAYS[attempt++]);
        if (upload.url && !upload.cancelled) {
          try {
            upload.offset = await serverOffset(upload);
            showProgress(upload, upload.offset);
          } catch (headErr) {
            if (headErr instanceof Fatal) throw headErr;
            /* still offline: the next attempt fails and waits longer */
          }
        }
      }
    }
  }

  async function create(upload) {
    var response;
    try {
      response = await fetch("/api/v1/videos", {
        method: "POST",
        credentials: "same-origin",
        headers: headers({
          "Upload-Length": String(upload.file.size),
          "Upload-Metadata": metadata({
            caption: caption.value,
            visibility: visibility.value,
            allow_comments: comments.checked ? "true" : "false",
            filename: upload.file.name,
          }),
        }),
      });
    } catch (e) {
      throw new Retryable("Cannot reach reelm.");
    }
    if (response.status === 201) {
      upload.url = response.headers.get("Location");
      upload.offset = 0;
      setPhase("Uploading…");
      return;
    }
    var message = await reelm.problemDetail(response, "The upload could not start.");
    if (response.status >= 500) throw new Retryable(message);
    throw new Fatal(message);
  }

  function sendPiece(upload) {
    return new Promise(function (resolve, reject) {
      var start = upload.offset;
      var chunk = Number(form.dataset.chunkBytes) || 5 * 1024 * 1024;
      var end = Math.min(upload.file.size, start + chunk);
      var xhr = new XMLHttpRequest();
      var stalled = false;
      upload.xhr = xhr;
      upload.lastProgress = Date.now();
      var watchdog = setInterval(function () {
        // Once the last byte is out, the server is checking the file: silence is expected.
        if (!upload.allSent && Date.now() - upload.lastProgress > STALL_MS) {
          stalled = true;
          xhr.abort();
        }
      }, 5000);
      xhr.open("PATCH", upload.url);
      var all = headers({
        "Upload-Offset": String(start),
        "Content-Type": "application/offset+octet-stream",
      });
      Object.keys(all).forEach(function (key) {
        xhr.setRequestHeader(key, all[key]);
      });
      xhr.upload.onprogress = function (event) {
        upload.lastProgress = Date.now();
        showProgress(upload, start + event.loaded);
        if (end === upload.file.size && event.loaded >= end - start) {
          // Every byte sent: reelm now checks the file and makes the video; it can no longer
          // be cancelled as an upload (delete the video instead).
          upload.allSent = true;
          cancelButton.hidden = true;
        }
      };
      xhr.onload = function () {
        clearInterval(watchdog);
        upload.xhr = null;
        if (xhr.status === 204) {
          upload.offset = Number(xhr.getResponseHeader("Upload-Offset"));
          showProgress(upload, upload.offset);
          resolve(upload.offset >= upload.file.size ? xhr.getResponseHeader("Location") : null);
          return;
        }
        var message = reelm.problemText(xhr.responseText, "The server refused this piece.");
        // 409: the server holds a different offset (a piece half-arrived): ask it and go on.
        if (xhr.status === 409 || xhr.status === 429 || xhr.status >= 500) {
          reject(new Retryable(message));
        } else {
          reject(new Fatal(message)); // the file itself was refused: say why
        }
      };
      xhr.onerror = function () {
        clearInterval(watchdog);
        upload.xhr = null;
        reject(new Retryable("The connection dropped."));
      };
      xhr.onabort = function () {
        clearInterval(watchdog);
        upload.xhr = null;
        reject(new Retryable(stalled ? "The connection stalled." : "Stopped."));
      };
      xhr.send(upload.file.slice(start, end));
    });
  }

  async function serverOffset(upload) {
    var response;
    try {
      response = await fetch(upload.url, {
        method: "HEAD",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Tus-Resumable": TUS },
      });
    } catch (e) {
      throw new Retryable("Cannot reach reelm.");
    }
    if (response.status === 404) {
      throw new Fatal("This upload is no longer on the server (it expired or was cancelled). Start again.");
    }
    if (!response.ok) throw new Retryable("The server did not answer.");
    return Number(response.headers.get("Upload-Offset"));
  }

  // Every byte arrived but the answer to the last piece was lost: did reelm take the video?
  async function confirmFinished(upload) {
    var id = upload.url.split("/").pop();
    var response;
    try {
      response = await fetch("/api/v1/videos/" + id, { credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      throw new Retryable("Cannot reach reelm.");
    }
    if (response.ok) {
      var video = await response.json();
      if (video.status !== "uploading") return "/api/v1/videos/" + id;
      // Every byte is there but the video was not made: an empty piece at the end asks again.
      var again;
      try {
        again = await fetch(upload.url, {
          method: "PATCH",
          credentials: "same-origin",
          headers: headers({
            "Upload-Offset": String(upload.file.size),
            "Content-Type": "application/offset+octet-stream",
          }),
          body: new Blob([]),
        });
      } catch (e) {
        throw new Retryable("Cannot reach reelm.");
      }
      if (again.status === 204) return again.headers.get("Location");
      if (again.status >= 500) throw new Retryable("The server did not answer.");
      throw new Fatal(await reelm.problemDetail(again, "The video could not be made."));
    }
    throw new Fatal(
      "The whole file was sent but reelm did not confirm it. Check Your videos, or upload it again."
    );
  }

  function showProgress(upload, sent) {
    var size = upload.file.size;
    var now = performance.now();
    var samples = upload.samples;
    samples.push([now, sent]);
    while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
    var first = samples[0];
    var seconds = (now - first[0]) / 1000;
    var speed = seconds > 0.2 ? (sent - first[1]) / seconds : 0;
    var percent = Math.min(100, Math.floor((sent * 100) / size));
    bar.value = percent;
    bar.textContent = percent + "%";
    var text = percent + "% · " + megabytes(sent) + " of " + megabytes(size);
    if (speed > 0 && sent < size) {
      text += " · " + (speed / 1e6).toFixed(1) + " MB/s · about " + timeLeft((size - sent) / speed) + " left";
    }
    detail.textContent = text;
    setPhase(sent >= size ? "Uploaded, checking the file…" : "Uploading…");
  }

  async function countdown(upload, ms) {
    var end = Date.now() + ms;
    while (!upload.cancelled && Date.now() < end) {
      var left = Math.ceil((end - Date.now()) / 1000);
      setPhase("Connection lost. Trying again in " + left + " s…");
      await wait(Math.min(1000, end - Date.now()));
    }
    if (!upload.cancelled) setPhase("Reconnecting…");
  }

  // ---- after the last byte: processing ----------------------------------------------------

  async function follow(upload, location) {
    cancelButton.hidden = true;
    window.removeEventListener("beforeunload", guard);
    var id = location.split("/").pop();
    setPhase("Processing…");
    bar.removeAttribute("value"); // indeterminate until the worker reports
    detail.textContent = "Uploaded " + megabytes(upload.file.size) + ". Preparing it for every screen…";
    var failures = 0;
    for (;;) {
      await wait(POLL_MS);
      if (upload.cancelled) return;
      var video;
      try {
        var response = await fetch(location, { credentials: "same-origin", cache: "no-store" });
        if (response.status === 404) {
          return stop(upload, "This video was deleted while it was being processed.");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        video = await response.json();
        failures = 0;
      } catch (e) {
        failures += 1;
        detail.textContent = "Cannot reach reelm to check on the video; still trying…";
        await wait(Math.min(10000, 1000 * failures));
        continue;
      }
      if (video.status === "ready") return ready(upload, id);
      if (video.status === "failed") {
        return stop(
          upload,
          reelm.sentence(video.failure || "Processing failed.") + " You can retry it from Your videos.",
          true
        );
      }
      if (video.status === "processing") {
        bar.value = video.progress;
        bar.textContent = video.progress + "%";
        detail.textContent = "Processing: " + video.progress + "%";
      } else {
        detail.textContent = "Waiting for its turn to be processed…";
      }
    }
  }

  function ready(upload, id) {
    active = null;
    bar.value = 100;
    bar.textContent = "100%";
    setPhase("Ready");
    detail.textContent = "Your video is ready to watch.";
    videoLink.href = "/v/" + id;
    done.hidden = false;
    cancelButton.hidden = true;
    form.reset();
    showCount();
    lockForm(false);
    videoLink.focus();
  }

  // ---- endings ----------------------------------------------------------------------------

  function stop(upload, message, processed) {
    if (active === upload) active = null;
    upload.cancelled = true;
    window.removeEventListener("beforeunload", guard);
    box.hidden = !processed;
    if (processed) setPhase("Failed");
    cancelButton.hidden = true;
    showError(message);
    lockForm(false);
    startButton.textContent = "Upload";
    errorBox.focus();
  }

  function giveUp(upload, message) {
    // Keep the upload on the server: the button resumes it from where it stopped.
    active = null;
    paused = upload;
    lockForm(false);
    fileInput.disabled = true;
    startButton.textContent = "Resume upload";
    setPhase("Upload paused");
    showError(
      reelm.sentence(message) + " The upload stopped at " + bar.value + "%. " +
        "Check your connection, then resume it."
    );
  }

  function resume(upload) {
    paused = null;
    active = upload;
    showError("");
    lockForm(true);
    startButton.textContent = "Upload";
    setPhase("Reconnecting…");
    window.addEventListener("beforeunload", guard);
    serverOffset(upload).then(
      function (offset) {
        upload.offset = offset;
        run(upload);
      },
      function (err) {
        if (err instanceof Fatal) return stop(upload, err.message);
        giveUp(upload, err.message);
      }
    );
  }

  function cancel() {
    var upload = active || paused;
    if (!upload) return;
    upload.cancelled = true;
    active = null;
    paused = null;
    if (upload.xhr) upload.xhr.abort();
    window.removeEventListener("beforeunload", guard);
    if (upload.url) {
      fetch(upload.url, { method: "DELETE", credentials: "same-origin", headers: headers() }).catch(
        function () {
          /* offline: the server forgets unfinished uploads after a day */
        }
      );
    }
    box.hidden = true;
    cancelButton.hidden = true;
    startButton.textContent = "Upload";
    lockForm(false);
    showError("");
    reelm.toast("Upload cancelled");
  }

  // ---- wiring -----------------------------------------------------------------------------

  caption.addEventListener("input", showCount);
  fileInput.addEventListener("change", function () {
    var file = fileInput.files[0];
    showError(file ? problemWithFile(file) : "");
    done.hidden = true;
  });
  cancelButton.addEventListener("click", cancel);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (active) return;
    if (paused) return resume(paused);
    var file = fileInput.files[0];
    var problem = problemWithFile(file);
    if (problem) {
      showError(problem);
      fileInput.focus();
      return;
    }
    if (length(caption.value) > MAX_CAPTION) {
      showError("The caption is too long: at most " + MAX_CAPTION + " characters.");
      caption.focus();
      return;
    }
    begin(file);
  });

  errorBox.setAttribute("tabindex", "-1");
  startButton.disabled = false;
  showCount();
})();
