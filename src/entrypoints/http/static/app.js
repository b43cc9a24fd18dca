// The chat page: an AG-UI client of this server. It keeps the API key and the run in progress
// in session storage only, so a reload (or a dropped connection) picks the run up again.
import { Api, ApiError, events, newId } from "/ui/agui.js";
import { escapeHtml, renderMarkdown } from "/ui/markdown.js";

const KEY = "sba.key";
const RUN = "sba.run";
const THREAD = "sba.thread";
const PROTOCOL = "1.0.0";

const $ = (id) => document.getElementById(id);
const state = {
  api: null,
  threadId: null,
  messages: [], // what the client holds of the thread, sent with every run
  runId: null,
  controller: null,
  lastEventId: null,
  view: null, // the DOM of the run being read
  documents: null, // title -> id, for citations
  calls: new Map(), // the thread's tool calls on the page: an approved one's result comes later
  threadsCursor: null,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function status(text) {
  $("status").textContent = text;
}

function scrollDown() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// ---- sign in -------------------------------------------------------------------------------

async function signIn(key) {
  const api = new Api(key);
  try {
    await api.json("GET", "/v1/tools");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw new Error("That key was not accepted.");
    throw error;
  }
  sessionStorage.setItem(KEY, key);
  state.api = api;
  $("signin").hidden = true;
  $("app").hidden = false;
  await loadThreads();
  const running = JSON.parse(sessionStorage.getItem(RUN) || "null");
  const thread = running?.threadId || sessionStorage.getItem(THREAD);
  // The first-start page hands over the first question.
  const first = sessionStorage.getItem("sba.ask");
  sessionStorage.removeItem("sba.ask");
  $("composer-input").focus();
  if (first && !running) {
    newThread();
    ask(first);
  } else if (thread) await openThread(thread, running);
  else newThread();
}

function signOut() {
  sessionStorage.clear();
  location.assign("/");
}

// ---- threads -------------------------------------------------------------------------------

async function loadThreads(more = false) {
  const list = $("thread-list");
  const note = $("threads-note");
  if (!more) {
    list.replaceChildren();
    state.threadsCursor = null;
  }
  const query = new URLSearchParams({ limit: "30" });
  if (more && state.threadsCursor) query.set("cursor", state.threadsCursor);
  try {
    const page = await state.api.json("GET", `/v1/threads?${query}`);
    note.hidden = true;
    for (const thread of page.threads) list.append(threadItem(thread));
    state.threadsCursor = page.nextCursor || null;
    $("more-threads").hidden = !state.threadsCursor;
  } catch (error) {
    note.hidden = false;
    note.textContent =
      error.code === "insufficient_scope"
        ? "This key may not list threads (it needs the threads:read scope)."
        : `Threads could not be loaded: ${error.message}`;
  }
  markCurrent();
}

function threadItem(thread) {
  const link = el("a", { href: `#${encodeURIComponent(thread.id)}`, text: thread.title });
  link.dataset.thread = thread.id;
  link.title = `${thread.title} — ${thread.runCount} run(s)`;
  link.addEventListener("click", (event) => {
    event.preventDefault();
    if (state.controller) return;
    openThread(thread.id);
    $("threads").classList.remove("open");
  });
  const remove = el("button", {
    type: "button",
    class: "secondary",
    text: "Delete",
    "aria-label": `Delete the thread ${thread.title}`,
    onclick: async () => {
      if (!confirm(`Delete "${thread.title}" with its messages?`)) return;
      try {
        await state.api.json("DELETE", `/v1/threads/${encodeURIComponent(thread.id)}`);
        if (state.threadId === thread.id) newThread();
        await loadThreads();
      } catch (error) {
        status(error.message);
      }
    },
  });
  return el("li", {}, link, remove);
}

function markCurrent() {
  for (const link of $("thread-list").querySelectorAll("a")) {
    link.setAttribute("aria-current", link.dataset.thread === state.threadId ? "true" : "false");
  }
}

function newThread() {
  state.threadId = newId("thread");
  state.messages = [];
  state.calls = new Map();
  sessionStorage.setItem(THREAD, state.threadId);
  $("log").replaceChildren();
  $("thread-title").textContent = "New conversation";
  markCurrent();
  status("");
}

async function openThread(threadId, running = null) {
  state.threadId = threadId;
  sessionStorage.setItem(THREAD, threadId);
  $("log").replaceChildren();
  markCurrent();
  state.messages = [];
  state.calls = new Map();
  let cursor = null;
  try {
    do {
      const query = new URLSearchParams({ limit: "500" });
      if (cursor) query.set("cursor", cursor);
      const page = await state.api.json(
        "GET",
        `/v1/threads/${encodeURIComponent(threadId)}/messages?${query}`,
      );
      // What the model reads again: the thread's text (tool exchanges are the server's).
      state.messages.push(
        ...page.messages
          .filter((m) => (m.role === "user" || m.role === "assistant") && m.content)
          .map((m) => ({ id: m.id, role: m.role, content: m.content })),
      );
      cursor = page.nextCursor;
    } while (cursor);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) status(error.message);
  }
  const live = running && running.threadId === threadId ? running : null;
  let finishedRun = true;
  if (live) {
    try {
      const run = await state.api.json("GET", `/v1/runs/${encodeURIComponent(live.runId)}`);
      finishedRun = ["succeeded", "failed", "cancelled"].includes(run.status);
    } catch {
      finishedRun = false;
    }
  }
  for (const m of state.messages) {
    if (m.role === "user") addText("user", m.content);
    else if (m.role === "assistant" && m.content) addText("assistant", m.content);
  }
  $("thread-title").textContent = state.messages.find((m) => m.role === "user")?.content || "Conversation";
  if (live && finishedRun) sessionStorage.removeItem(RUN);
  // Reloaded mid-run: the run is replayed from its start into the fresh page, then followed.
  else if (live) await follow(live.runId);
  scrollDown();
}

// ---- rendering -----------------------------------------------------------------------------

function addText(role, text) {
  const body = el("div", { class: "body" });
  body.innerHTML = renderMarkdown(text);
  const node = el("article", { class: `msg ${role}` }, el("div", { class: "who", text: role === "user" ? "You" : "Assistant" }), body);
  $("log").append(node);
  wireCitations(node, text);
  scrollDown();
  return node;
}

// The numbered sources an answer lists after "Sources:", as buttons opening the document.
function sourcesOf(text) {
  const [, tail] = text.split(/\n\nSources:\n?/);
  if (!tail) return [];
  const found = [];
  for (const line of tail.split("\n")) {
    const m = /^\[(\d+)\] (.+?)(?: \(([^)]*)\))?$/.exec(line.trim());
    if (m) found.push({ n: m[1], title: m[2], source: m[3] || "" });
  }
  return found;
}

function wireCitations(node, text, documentIds = {}) {
  node.querySelector(".citations")?.remove();
  const sources = sourcesOf(text);
  if (!sources.length) return;
  const box = el("div", { class: "citations", role: "group", "aria-label": "Sources" });
  for (const s of sources) {
    box.append(
      el("button", {
        type: "button",
        class: "citation",
        text: `[${s.n}] ${s.title}`,
        "aria-label": `Open source ${s.n}: ${s.title}`,
        onclick: () => openDocument(s.title, s.source, documentIds[s.title]),
      }),
    );
  }
  node.append(box);
}

async function openDocument(title, source, knownId) {
  const dialog = $("document");
  $("document-title").textContent = title;
  $("document-source").textContent = source;
  $("document-body").textContent = "Loading…";
  dialog.showModal();
  try {
    let id = knownId;
    if (!id) {
      if (!state.documents) {
        state.documents = {};
        let cursor = null;
        do {
          const query = new URLSearchParams({ limit: "500" });
          if (cursor) query.set("cursor", cursor);
          const page = await state.api.json("GET", `/v1/kb/documents?${query}`);
          for (const d of page.documents) state.documents[d.title] = d.id;
          cursor = page.nextCursor;
        } while (cursor);
      }
      id = state.documents[title];
    }
    if (!id) throw new Error("This document is no longer in the knowledge base.");
    const doc = await state.api.json("GET", `/v1/kb/documents/${encodeURIComponent(id)}`);
    $("document-body").innerHTML = renderMarkdown(doc.content || "");
  } catch (error) {
    $("document-body").textContent =
      error.code === "insufficient_scope" ? "This key may not read the knowledge base." : error.message;
  }
}

// One run's view: its text messages, tool calls and outcome, built as events arrive.
function runView() {
  return { texts: new Map(), calls: state.calls, documentIds: {} };
}

function onEvent(view, event) {
  switch (event.type) {
    case "TEXT_MESSAGE_START": {
      const node = addText("assistant", "");
      node.classList.add("streaming");
      view.texts.set(event.messageId, { node, text: "" });
      assistantMessage(event.messageId);
      break;
    }
    case "TEXT_MESSAGE_CONTENT": {
      const entry = view.texts.get(event.messageId) || { node: addText("assistant", ""), text: "" };
      entry.text += event.delta;
      view.texts.set(event.messageId, entry);
      entry.node.querySelector(".body").innerHTML = renderMarkdown(entry.text);
      assistantMessage(event.messageId).content = entry.text;
      scrollDown();
      break;
    }
    case "TEXT_MESSAGE_END": {
      const entry = view.texts.get(event.messageId);
      if (entry) {
        entry.node.classList.remove("streaming");
        wireCitations(entry.node, entry.text, view.documentIds);
      }
      break;
    }
    case "TOOL_CALL_START": {
      const args = el("pre", { class: "args" });
      const result = el("div", { class: "result" });
      const node = el(
        "details",
        { class: "msg tool", open: "" },
        el("summary", { text: `Tool call: ${event.toolCallName}` }),
        el("div", { class: "who", text: "Arguments" }),
        args,
        result,
      );
      $("log").append(node);
      view.calls.set(event.toolCallId, { name: event.toolCallName, args: "", node, argsNode: args, result });
      const parent = assistantMessage(event.parentMessageId || `msg-${event.toolCallId}`);
      parent.toolCalls = parent.toolCalls || [];
      parent.toolCalls.push({ id: event.toolCallId, type: "function", function: { name: event.toolCallName, arguments: "" } });
      break;
    }
    case "TOOL_CALL_ARGS": {
      const call = view.calls.get(event.toolCallId);
      if (call) {
        call.args += event.delta;
        call.argsNode.textContent = call.args;
      }
      break;
    }
    case "TOOL_CALL_END": {
      const call = view.calls.get(event.toolCallId);
      if (call) {
        call.argsNode.textContent = pretty(call.args);
        for (const m of state.messages) {
          for (const tc of m.toolCalls || []) if (tc.id === event.toolCallId) tc.function.arguments = call.args;
        }
      }
      break;
    }
    case "TOOL_CALL_RESULT": {
      state.messages.push({ id: event.messageId, role: "tool", toolCallId: event.toolCallId, content: event.content });
      const call = view.calls.get(event.toolCallId);
      if (call) showResult(view, call, event.content);
      break;
    }
    case "MESSAGES_SNAPSHOT":
      state.messages = event.messages;
      break;
    case "RUN_ERROR":
      view.failed = event;
      $("log").append(el("p", { class: "msg failed", role: "alert", text: `The run failed (${event.code || "error"}): ${event.message}` }));
      break;
    case "RUN_FINISHED":
      view.finished = event;
      break;
    default:
      break;
  }
}

function assistantMessage(id) {
  let message = state.messages.find((m) => m.id === id);
  if (!message) {
    message = { id, role: "assistant", content: "" };
    state.messages.push(message);
  }
  return message;
}

function showResult(view, call, content) {
  let value = null;
  try {
    value = JSON.parse(content);
  } catch {
    value = null;
  }
  call.result.replaceChildren(el("div", { class: "who", text: "Result" }), el("pre", { text: pretty(content) }));
  if (value && Array.isArray(value.results)) {
    for (const hit of value.results) if (hit.title && hit.documentId) view.documentIds[hit.title] = hit.documentId;
    const box = el("div", { class: "citations", role: "group", "aria-label": "Passages found" });
    for (const hit of value.results) {
      if (!hit.citation) continue;
      box.append(
        el("button", {
          type: "button",
          class: "citation",
          text: hit.citation,
          onclick: () => openDocument(hit.title, hit.source || "", hit.documentId),
        }),
      );
    }
    call.result.append(box);
  }
  if (value && value.downloads && typeof value.downloads === "object") {
    const links = el("p", { class: "downloads" }, el("span", { class: "who", text: "Downloads " }));
    for (const [format, href] of Object.entries(value.downloads)) {
      if (typeof href !== "string" || !/^(https?:\/\/|\/(?!\/))/.test(href)) continue;
      links.append(el("a", { href, download: "", rel: "noopener noreferrer", text: `${format}` }));
    }
    call.result.append(links);
  }
}

// ---- runs ----------------------------------------------------------------------------------

function busy(on) {
  $("send").disabled = on;
  $("cancel").hidden = !on;
  $("composer-input").setAttribute("aria-busy", on ? "true" : "false");
}

async function ask(text) {
  if (!state.messages.length) $("thread-title").textContent = text;
  state.messages.push({ id: newId("msg"), role: "user", content: text });
  addText("user", text);
  await start();
}

async function start(resume = null) {
  const runId = newId("run");
  const body = {
    threadId: state.threadId,
    runId,
    protocolVersion: PROTOCOL,
    messages: state.messages,
    tools: [],
    context: [],
    state: {},
  };
  if (resume) body.resume = resume;
  state.runId = runId;
  state.lastEventId = null;
  sessionStorage.setItem(RUN, JSON.stringify({ runId, threadId: state.threadId }));
  await read(runId, () => state.api.stream("POST", "/v1/agents/assistant/runs", { body, signal: state.controller.signal }));
}

// Reads a run to its end, following it again from the last event after a dropped connection.
async function read(runId, open, view = runView()) {
  state.controller = new AbortController();
  state.view = view;
  busy(true);
  status("The assistant is answering…");
  let attempts = 0;
  let opener = open;
  try {
    for (;;) {
      try {
        const response = await opener();
        for await (const { id, event } of events(response)) {
          if (id) {
            state.lastEventId = id;
            sessionStorage.setItem(RUN, JSON.stringify({ runId, threadId: state.threadId, lastEventId: id }));
          }
          onEvent(view, event);
          attempts = 0;
        }
        if (view.finished || view.failed) break;
        throw new Error("the stream ended early");
      } catch (error) {
        if (state.controller.signal.aborted || (error instanceof ApiError && error.status !== 503)) throw error;
        if (++attempts > 5) throw error;
        status("Connection lost — reconnecting…");
        await new Promise((resolve) => setTimeout(resolve, 500 * attempts));
        const after = state.lastEventId;
        opener = () =>
          state.api.stream("GET", `/v1/runs/${encodeURIComponent(runId)}/events`, {
            lastEventId: after,
            signal: state.controller.signal,
          });
      }
    }
    status("");
  } catch (error) {
    if (!state.controller.signal.aborted) status(`The run could not be followed: ${error.message}`);
  } finally {
    busy(false);
    state.controller = null;
    sessionStorage.removeItem(RUN);
  }
  const outcome = view.finished?.outcome;
  if (outcome?.type === "interrupt") askApproval(view, outcome.interrupts || []);
  loadThreads();
}

// Follows a run from its first event (a reload lost what the page had drawn of it).
async function follow(runId) {
  state.runId = runId;
  await read(
    runId,
    () =>
      state.api.stream("GET", `/v1/runs/${encodeURIComponent(runId)}/events`, {
        signal: state.controller.signal,
      }),
    runView(),
  );
}

function askApproval(view, interrupts) {
  const answers = new Map();
  for (const interrupt of interrupts) {
    const call = view.calls.get(interrupt.toolCallId);
    const what = call ? `${call.name} ${pretty(call.args)}` : "a tool";
    const decide = (status) => async () => {
      answers.set(interrupt.id, status);
      box.querySelectorAll("button").forEach((b) => (b.disabled = true));
      box.append(el("p", { text: status === "resolved" ? "Approved." : "Rejected." }));
      if (answers.size === interrupts.length) {
        await start([...answers].map(([interruptId, s]) => ({ interruptId, status: s })));
      }
    };
    const approve = el("button", { type: "button", text: "Approve", onclick: decide("resolved") });
    const reject = el("button", { type: "button", class: "secondary", text: "Reject", onclick: decide("cancelled") });
    const box = el(
      "section",
      { class: "msg interrupt", role: "group", "aria-label": "Approval needed" },
      el("div", { class: "who", text: "Approval needed" }),
      el("p", { text: interrupt.message || "The assistant asks to run a tool." }),
      el("pre", { text: what }),
      el("div", { class: "actions" }, approve, reject),
    );
    $("log").append(box);
    approve.focus();
  }
  scrollDown();
}

async function cancel() {
  if (!state.runId) return;
  try {
    await state.api.json("DELETE", `/v1/runs/${encodeURIComponent(state.runId)}`);
    status("Stopping…");
  } catch (error) {
    status(error.message);
  }
}

// ---- wiring --------------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("signin-key").value.trim());
    } catch (error) {
      $("signin-error").textContent = error.message;
    }
  });
  $("signout").addEventListener("click", signOut);
  $("new-thread").addEventListener("click", () => {
    if (!state.controller) newThread();
    $("composer-input").focus();
  });
  $("more-threads").addEventListener("click", () => loadThreads(true));
  $("toggle-threads").addEventListener("click", () => {
    const open = $("threads").classList.toggle("open");
    $("toggle-threads").setAttribute("aria-expanded", String(open));
  });
  $("cancel").addEventListener("click", cancel);
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("composer-input");
    const text = input.value.trim();
    if (!text || state.controller) return;
    input.value = "";
    await ask(text);
  });
  $("composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
}

wire();
const saved = sessionStorage.getItem(KEY);
if (saved) {
  signIn(saved).catch(() => {
    sessionStorage.removeItem(KEY);
    $("signin").hidden = false;
  });
} else {
  $("signin").hidden = false;
  $("signin-key").focus();
}
