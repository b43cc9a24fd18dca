// A small, safe Markdown renderer for streamed answers. Every character of the source is
// HTML-escaped before any markup is recognised, and links keep only http(s), relative and
// fragment targets, so no text from a model or a document can become markup of its own.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function unescapeHtml(text) {
  return text.replace(/&(amp|lt|gt|quot|#39);/g, (_, name) =>
    ({ amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'" })[name],
  );
}

function safeHref(raw) {
  const href = raw.trim();
  if (/^(https?:\/\/|\/(?!\/)|#)/i.test(href)) return href;
  return null;
}

// Inline markup on text that is already escaped: code spans first (their content is left
// alone), then links, bold, italics and citation markers like [1].
function inline(escaped) {
  const codes = [];
  let out = escaped.replace(/`([^`\n]+)`/g, (_, code) => {
    codes.push(`<code>${code}</code>`);
    return `\u0000${codes.length - 1}\u0000`;
  });
  out = out.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (whole, label, target) => {
    // The target was escaped with the rest: undo that for the check, escape it again after.
    const href = safeHref(unescapeHtml(target));
    if (href === null) return label;
    return `<a href="${escapeHtml(href)}" rel="noopener noreferrer">${label}</a>`;
  });
  out = out.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
  out = out.replace(/(^|[\s(])\*([^*\n]+)\*(?=[\s).,;:!?]|$)/g, "$1<em>$2</em>");
  out = out.replace(/\[(\d{1,3})\](?!\()/g, '<sup class="cite" data-cite="$1">[$1]</sup>');
  return out.replace(/\u0000(\d+)\u0000/g, (_, n) => codes[Number(n)]);
}

// Block structure: fenced code, headings, lists, paragraphs. An unclosed fence (a message still
// streaming) renders as code up to the end.
export function renderMarkdown(source) {
  const clean = String(source).replace(/\u0000/g, "").replace(/\r\n?/g, "\n");
  const lines = escapeHtml(clean).split("\n");
  const html = [];
  let paragraph = [];
  let list = null;
  const flush = () => {
    if (paragraph.length) html.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
    if (list) html.push(`</${list}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^```/.test(line)) {
      flush();
      const code = [];
      for (i++; i < lines.length && !/^```/.test(lines[i]); i++) code.push(lines[i]);
      html.push(`<pre><code>${code.join("\n")}</code></pre>`);
      continue;
    }
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const level = heading[1].length + 2; // the page's own headings come first
      html.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      continue;
    }
    const item = /^\s*(?:([-*+])|(\d{1,3})[.)])\s+(.*)$/.exec(line);
    if (item) {
      const kind = item[1] ? "ul" : "ol";
      if (paragraph.length || (list && list !== kind)) flush();
      if (!list) html.push(`<${kind}>`);
      list = kind;
      html.push(`<li>${inline(item[3])}</li>`);
      continue;
    }
    if (!line.trim()) {
      flush();
      continue;
    }
    if (list) flush();
    paragraph.push(line);
  }
  flush();
  return html.join("");
}
