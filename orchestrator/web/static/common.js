// Shared by every page: asking the API (with the token, if the server wants one) and building
// elements whose text is always text, never markup.
"use strict";

const STATE_COLOURS = {
  succeeded: "#2e7d32", failed: "#c62828", running: "#1565c0", active: "#1565c0", ready: "#1565c0",
  cancelled: "#6d6d6d", failing: "#ef6c00", waiting: "#ef6c00", idle: "#9e9e9e", pending: "#9e9e9e",
};

function withToken(headers) {
  const token = localStorage.getItem("evenflow.token");
  return token ? { ...headers, Authorization: "Bearer " + token } : headers;
}

async function api(path, init) {
  const headers = withToken((init && init.headers) || {});
  const response = await fetch(path, { ...(init || {}), headers });
  if (response.status === 401) {
    const given = prompt("This evenflow server needs its token:");
    if (given) { localStorage.setItem("evenflow.token", given); return api(path, init); }
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(state) {
  return el("span", { class: "state " + state, "data-state": state }, state);
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\+00:00$/, "").slice(0, 23) : "-";
}

function header(active) {
  const links = [["Runs", "/runs"], ["Stats", "/stats"], ["Workers", "/workers"]].map(([name, href]) =>
    el("a", { href, "aria-current": name === active ? "page" : null }, name));
  document.body.prepend(el("header", {}, el("span", { class: "brand" }, "evenflow"), ...links));
}

function showError(where, error) {
  where.replaceChildren(el("p", { class: "error", role: "alert" }, "Could not load: " + error.message));
}

function apiPost(path, body) {
  return api(path, { method: "POST", body: JSON.stringify(body || {}), headers: { "Content-Type": "application/json" } });
}

// Server-sent events read through fetch, not EventSource, so the token travels in a header.
async function listen(path, handlers) {
  const response = await fetch(path, { headers: withToken({}) });
  if (!response.ok || !response.body) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const name = (block.match(/^event: (.*)$/m) || [])[1] || "message";
      if (handlers[name]) handlers[name]();
    }
  }
}
