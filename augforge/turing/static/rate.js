// Rating page: keyboard shortcuts and answers through the JSON API without page reloads.
// Without JavaScript the form posts to /rate and the server redirects to the next image.
(function () {
  "use strict";
  const form = document.getElementById("rate");
  if (!form) return;
  const rater = form.dataset.rater;
  const img = document.getElementById("lesion");
  const imageId = document.getElementById("image-id");
  const pos = document.getElementById("pos");
  const total = document.getElementById("total");
  const bar = document.getElementById("bar");
  const msg = document.getElementById("msg");
  const next = document.getElementById("next");
  let shownAt = performance.now();
  let busy = false;

  function say(text) { msg.textContent = text; msg.hidden = !text; }
  function preload(id) { if (id) { new Image().src = "/img/" + id; } }
  function choose(name, value) {
    const input = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (input) { input.checked = true; say(""); }
  }
  function value(name) {
    const input = form.querySelector('input[name="' + name + '"]:checked');
    return input ? input.value : null;
  }

  function show(p) {
    if (p.done) { window.location.assign("/done"); return; }
    form.reset();
    imageId.value = p.image;
    next.disabled = true;  // no answer before the new image is on screen
    img.src = "/img/" + p.image;
    pos.textContent = p.answered + 1;
    total.textContent = p.total;
    bar.style.width = (100 * p.answered / p.total).toFixed(1) + "%";
    bar.parentElement.setAttribute("aria-valuenow", p.answered);
    preload(p.preload);
  }

  img.addEventListener("load", function () { shownAt = performance.now(); next.disabled = false; });
  if (img.complete) { next.disabled = false; }
  preload(form.dataset.preload);

  async function submit() {
    if (busy || next.disabled) return;
    const answer = value("answer");
    const confidence = value("confidence");
    if (!answer || !confidence) { say("Choose real or generated, and a confidence from 1 to 5."); return; }
    busy = true;
    say("");
    try {
      const res = await fetch("/api/answers", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ rater: rater, image: imageId.value, answer: answer,
          confidence: Number(confidence), elapsed_ms: Math.round(performance.now() - shownAt) }),
      });
      if (res.status === 201) { show(await res.json()); return; }
      if (res.status === 409) {  // already answered (another tab): move on to the next one
        const r2 = await fetch("/api/raters/" + encodeURIComponent(rater) + "/next");
        if (r2.ok) { show(await r2.json()); return; }
      }
      const body = await res.json().catch(function () { return {}; });
      say(body.detail || ("The answer was not saved (HTTP " + res.status + "). Please try again."));
    } catch (e) {
      say("No connection to the server; your answer was not saved. Please try again.");
    } finally {
      busy = false;
    }
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); submit(); });
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.isComposing) return;
    const k = ev.key.toLowerCase();
    if (k === "r") { choose("answer", "real"); }
    else if (k === "g") { choose("answer", "generated"); }
    else if (k >= "1" && k <= "5" && k.length === 1) { choose("confidence", k); }
    else if (k === "enter") { ev.preventDefault(); submit(); }
    else { return; }
    ev.preventDefault();
  });
})();
