// The first-start page: a workspace (created with the admin token, or an existing one), the
// person's documents (dropped or chosen, uploaded with progress) or a starter template, and the
// first question, asked on the chat page.
import { Api, ApiError } from "/ui/agui.js";

const $ = (id) => document.getElementById(id);
let api = null;

function step(n) {
  for (const k of [1, 2, 3]) {
    $(`step-${k}`).hidden = k !== n;
    const mark = $(`step-${k}-mark`);
    if (k === n) mark.setAttribute("aria-current", "step");
    else mark.removeAttribute("aria-current");
  }
  $(`step-${n}-title`).setAttribute("tabindex", "-1");
  $(`step-${n}-title`).focus();
}

async function useKey(key) {
  const candidate = new Api(key);
  await candidate.json("GET", "/v1/tools");
  api = candidate;
  sessionStorage.setItem("sba.key", key);
  sessionStorage.removeItem("sba.thread");
  step(2);
  loadTemplates();
}

async function createWorkspace(event) {
  event.preventDefault();
  $("create-error").textContent = "";
  const admin = new Api($("admin-token").value.trim());
  const slug = $("slug").value.trim();
  const name = $("display-name").value.trim() || slug;
  try {
    await admin.json("POST", "/admin/v1/tenants", { slug, name });
    const issued = await admin.json("POST", `/admin/v1/tenants/${encodeURIComponent(slug)}/keys`, {
      role: "admin",
    });
    await useKey(issued.key);
  } catch (error) {
    $("create-error").textContent =
      error instanceof ApiError && error.status === 404
        ? "This server has no admin token set: use the demo workspace's key below."
        : error.message;
  }
}

async function useExisting(event) {
  event.preventDefault();
  $("key-error").textContent = "";
  try {
    await useKey($("existing-key").value.trim());
  } catch (error) {
    $("key-error").textContent =
      error instanceof ApiError && error.status === 401 ? "That key was not accepted." : error.message;
  }
}

const TYPES = { md: "markdown", markdown: "markdown", txt: "text", html: "html", htm: "html" };

// One file: read as text, then POSTed with XMLHttpRequest, whose upload events give progress.
function upload(file) {
  const row = document.createElement("li");
  const name = document.createElement("span");
  name.textContent = file.name;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${file.name}`);
  const note = document.createElement("span");
  note.textContent = "reading…";
  row.append(name, bar, note);
  $("uploads").append(row);
  return file.text().then(
    (content) =>
      new Promise((resolve) => {
        const extension = file.name.split(".").pop().toLowerCase();
        const heading = /^#\s+(.+)$/m.exec(content);
        const kind = TYPES[extension] || "text";
        const body = JSON.stringify({
          // A Markdown file's first heading names it best; otherwise its file name.
          title: (kind === "markdown" && heading ? heading[1] : file.name.replace(/\.[^.]+$/, ""))
            .trim()
            .slice(0, 300),
          content,
          contentType: kind,
          source: `upload/${file.name}`,
        });
        const request = new XMLHttpRequest();
        request.open("POST", "/v1/kb/documents");
        request.setRequestHeader("Authorization", `Bearer ${api.key}`);
        request.setRequestHeader("Content-Type", "application/json");
        request.upload.addEventListener("progress", (e) => {
          if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
        });
        request.addEventListener("load", () => {
          let answer = null;
          try {
            answer = JSON.parse(request.responseText);
          } catch {
            answer = null;
          }
          if (request.status === 200 || request.status === 201) {
            bar.value = 100;
            note.textContent = answer?.index?.state === "indexed" ? "indexed" : "uploaded";
            row.classList.add("done");
          } else {
            note.textContent = `failed: ${answer?.detail || request.status}`;
            row.classList.add("failed");
          }
          resolve();
        });
        request.addEventListener("error", () => {
          note.textContent = "failed: the connection dropped";
          resolve();
        });
        note.textContent = "uploading…";
        request.send(body);
      }),
  );
}

function uploadAll(files) {
  return Promise.all(Array.from(files).map(upload));
}

async function loadTemplates() {
  const box = $("templates");
  box.replaceChildren();
  try {
    const { templates } = await api.json("GET", "/v1/kb/templates");
    for (const t of templates) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = t.title;
      const small = document.createElement("small");
      small.textContent = `${t.description} (${t.documents.length} documents)`;
      button.append(small);
      button.addEventListener("click", async () => {
        $("templates-status").textContent = `Loading ${t.title}…`;
        try {
          await api.json("POST", `/v1/kb/templates/${encodeURIComponent(t.name)}`);
          $("templates-status").textContent = `${t.title} loaded: ${t.documents.map((d) => d.title).join(", ")}.`;
        } catch (error) {
          $("templates-status").textContent = error.message;
        }
      });
      box.append(button);
    }
  } catch (error) {
    $("templates-status").textContent = error.message;
  }
}

function wire() {
  $("create-form").addEventListener("submit", createWorkspace);
  $("key-form").addEventListener("submit", useExisting);
  const drop = $("drop");
  const files = $("files");
  drop.addEventListener("click", () => files.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      files.click();
    }
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadAll(e.dataTransfer.files);
  });
  files.addEventListener("change", () => {
    uploadAll(files.files);
    files.value = "";
  });
  $("to-step-3").addEventListener("click", () => {
    step(3);
    $("question").focus();
  });
  $("ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("sba.ask", $("question").value.trim());
    location.assign("/");
  });
}

wire();
const saved = sessionStorage.getItem("sba.key");
if (saved) {
  $("existing-key").value = saved;
}
