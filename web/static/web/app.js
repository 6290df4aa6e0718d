// The page talks only to our backend; the MKA1 key never reaches the browser.
"use strict";

const csrf = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { "Accept": "application/json", "X-CSRFToken": csrf(), ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function renderMedia(media) {
  // Files are fetched from our own API, which serves them to their owner only.
  const box = el("div", { class: "media", "data-kind": media.kind });
  if (media.kind === "image" && media.thumbnail_url) {
    const link = el("a", { href: media.url, target: "_blank", rel: "noopener" },
      el("img", { src: media.thumbnail_url, alt: "Photo you sent", class: "thumb" }));
    box.append(link);
  } else if (media.kind === "audio") {
    box.append(el("div", { class: "voice" }, media.voice ? "🎤 Voice note" : "🎵 Audio"));
    if (media.transcript) box.append(el("div", { class: "transcript" }, `“${media.transcript}”`));
    if (media.url) box.append(el("audio", { controls: "", preload: "none", src: media.url }));
  } else if (media.kind === "document") {
    const name = media.filename || "document";
    box.append(media.url
      ? el("a", { href: media.url, download: name, class: "document" }, `📄 ${name}`)
      : el("span", { class: "document" }, `📄 ${name}`));
  }
  return box;
}

function renderTurn(turn) {
  const badge = el("span", { class: `badge ${turn.channel}` }, turn.channel === "whatsapp" ? "WhatsApp" : "Web");
  const said = el("div", { class: "user" }, badge, " ");
  if (turn.media) said.append(renderMedia(turn.media));
  if (turn.text) said.append(turn.text);
  const item = el("li", { class: "turn", "data-id": String(turn.id), "data-state": turn.state }, said);
  if (turn.reply) {
    const meta = el("div", { class: "meta" });
    if (turn.response_id) {
      const open = el("button", { class: "link", type: "button", "data-response-id": turn.response_id }, turn.response_id);
      open.addEventListener("click", () => openResponse(turn.response_id));
      meta.append(open);
    }
    if (turn.feedback) {
      const up = turn.feedback === "thumbs_up";
      meta.append(" ", el("span", { class: `feedback ${turn.feedback}`, title: "Your rating of this answer" },
        up ? "👍 rated helpful" : "👎 rated unhelpful"));
    }
    item.append(el("div", { class: "bot" }, turn.reply, meta));
  } else {
    const status = turn.limited ? "Not answered: too many messages at once."
      : turn.state === "failed" ? "Could not answer." : "Answering…";
    item.append(el("div", { class: "meta" }, status));
  }
  return item;
}

async function refresh() {
  const { turns } = await api("/api/conversation");
  const thread = document.getElementById("thread");
  thread.replaceChildren(...turns.map(renderTurn));
  document.getElementById("empty").hidden = turns.length > 0;
  return turns;
}

async function openResponse(responseId) {
  const status = document.getElementById("open-status");
  const pre = document.getElementById("response-json");
  document.getElementById("response-id").value = responseId;
  status.textContent = "Loading…";
  pre.hidden = true;
  try {
    const record = await api(`/api/multichannel/${encodeURIComponent(responseId)}`);
    pre.textContent = JSON.stringify(record, null, 2);
    pre.hidden = false;
    status.textContent = `Conversation ${record.conversation_id}`;
  } catch (error) {
    status.textContent = error.message;
  }
}

async function waitForReply(messageId, deadline = Date.now() + 60000) {
  while (Date.now() < deadline) {
    const turn = await api(`/api/messages/${messageId}`);
    if (turn.reply || turn.limited || turn.state === "failed") return turn;
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
  throw new Error("No reply yet; it will appear here when ready.");
}

document.getElementById("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  const status = document.getElementById("send-status");
  const text = input.value.trim();
  if (!text) return;
  status.textContent = "Sending…";
  try {
    const turn = await api("/api/messages", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
    input.value = "";
    await refresh();
    await waitForReply(turn.id);
    await refresh();
    status.textContent = "";
  } catch (error) {
    status.textContent = error.message;
  }
});

document.getElementById("open").addEventListener("submit", (event) => {
  event.preventDefault();
  openResponse(document.getElementById("response-id").value.trim());
});

refresh().catch((error) => { document.getElementById("send-status").textContent = error.message; });
