// Drives a live SBA server with the real @ag-ui/client HttpAgent, so the client's own
// validation and verification run on our stream. Prints one JSON line; exits 1 when the client
// rejects the stream (or the request fails).
//
//   node run_agent.mjs --client v1|legacy --url URL --key KEY --mode plain|resume|frontend
//        [--thread ID] [--run ID] [--message TEXT] [--forwarded-props JSON]
//        [--tools JSON] [--result TEXT]
//
// plain:    POST a RunAgentInput to URL (/v1/agents/assistant/runs).
// resume:   GET URL (/v1/runs/{runId}/events) without Last-Event-ID: the run from the start.
// frontend: plain, then answer the last tool call with --result in a second run.
//
// What each generation does with the stream (read from their dist/index.mjs):
// - v1 (1.0.0) sends `protocolVersion: "1.0"`; parses SSE by splitting on "\n\n" and keeping
//   `data:` lines; zod-parses every event (null for an optional field is fatal) but only WARNS
//   and drops an unknown event type or strips an unknown field; then verifies ordering.
// - legacy (0.0.59, CopilotKit 1.75) sends no protocolVersion; zod-parses with a closed union,
//   so an unknown event type or outcome (e.g. `cancelled`) is fatal; same ordering checks.
// Neither rejects a stream without a terminal event or with ids that do not echo the input,
// and v1's drops are silent: so this script reports every warning the client printed, and the
// tests check for none, for exactly one terminal event and for the echoed ids.
import { HttpAgent as HttpAgentV1 } from "@ag-ui/client";
import { HttpAgent as HttpAgentLegacy } from "ag-ui-client-legacy";

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) {
      throw new Error(`expected --name value pairs, got ${argv.slice(i).join(" ")}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (!["v1", "legacy"].includes(args.client)) throw new Error("--client must be v1 or legacy");
if (!["plain", "resume", "frontend"].includes(args.mode)) throw new Error("bad --mode");
const Base = args.client === "legacy" ? HttpAgentLegacy : HttpAgentV1;

// Both generations build the fetch options in `requestInit(input)` and call
// `fetch(this.url, this.requestInit(input))`, so a subclass can turn the run into a GET.
class ResumingAgent extends Base {
  requestInit(_input) {
    return {
      method: "GET",
      headers: { ...this.headers, Accept: "text/event-stream" },
      signal: this.abortController.signal,
    };
  }
}

// The client reports what it dropped or could not apply with console.warn only.
const warnings = [];
const warn = console.warn;
console.warn = (...parts) => {
  warnings.push(parts.map((p) => (typeof p === "string" ? p : String(p))).join(" "));
  warn(...parts);
};

const Agent = args.mode === "resume" ? ResumingAgent : Base;
const agent = new Agent({
  url: args.url,
  headers: { Authorization: `Bearer ${args.key}` },
  threadId: args.thread ?? `thread-${Date.now()}`,
  initialMessages: [
    { id: `user-${Date.now()}`, role: "user", content: args.message ?? "What can you do?" },
  ],
});

let events = [];
let text = "";
let started = null;
let finished = null;
let sent = null;
const tools = args.tools ? JSON.parse(args.tools) : [];
// onEvent runs after the client's parse, enforce and verify steps: only accepted events land here.
const subscriber = {
  onRunInitialized({ input }) {
    sent ??= input;
  },
  onEvent({ event }) {
    events.push(event.type);
    if (event.type === "TEXT_MESSAGE_CONTENT") text += event.delta;
    if (event.type === "RUN_STARTED") started = event;
    if (event.type === "RUN_FINISHED") finished = event;
  },
};
try {
  await agent.runAgent(
    {
      runId: args.run ?? `run-${Date.now()}`,
      tools,
      forwardedProps: args["forwarded-props"] ? JSON.parse(args["forwarded-props"]) : {},
    },
    subscriber,
  );
  if (args.mode === "frontend") {
    // The client carries out its own tool and answers in a second run, as CopilotKit does.
    const call = agent.messages.flatMap((m) => m.toolCalls ?? []).at(-1);
    if (!call) throw new Error("the first run asked for no tool call");
    agent.addMessage({
      id: `tool-${Date.now()}`,
      role: "tool",
      toolCallId: call.id,
      content: args.result ?? "done",
    });
    events = [];
    text = "";
    await agent.runAgent({ runId: `${args.run}-2`, tools }, subscriber);
  }
  console.log(
    JSON.stringify({
      ok: true,
      events,
      text,
      threadId: started?.threadId,
      runId: started?.runId,
      finishedThreadId: finished?.threadId,
      finishedRunId: finished?.runId,
      sentProtocolVersion: sent?.protocolVersion ?? null,
      warnings,
      messages: agent.messages.map((m) => ({ role: m.role, content: m.content })),
    }),
  );
} catch (error) {
  console.log(
    JSON.stringify({ ok: false, error: String(error?.message ?? error), events, warnings }),
  );
  process.exit(1);
}
