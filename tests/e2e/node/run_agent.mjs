// Drives a live SBA server with the real @ag-ui/client HttpAgent, so the client's own
// verification runs on our stream. Prints one JSON line; exits 1 when the client rejects it.
//
//   node run_agent.mjs --client v1|legacy --url URL --key KEY --mode plain|resume
//        [--thread ID] [--run ID] [--message TEXT] [--forwarded-props JSON]
//
// plain:  POST a RunAgentInput to URL (/v1/agents/assistant/runs).
// resume: GET URL (/v1/runs/{runId}/events) and replay the run from the start.
import { HttpAgent as HttpAgentV1 } from "@ag-ui/client";
import { HttpAgent as HttpAgentLegacy } from "ag-ui-client-legacy";

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--")) throw new Error(`unexpected argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const Base = args.client === "legacy" ? HttpAgentLegacy : HttpAgentV1;

class ResumingAgent extends Base {
  requestInit(_input) {
    return {
      method: "GET",
      headers: { ...this.headers, Accept: "text/event-stream" },
      signal: this.abortController.signal,
    };
  }
}

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
const tools = args.tools ? JSON.parse(args.tools) : [];
const subscriber = {
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
      messages: agent.messages.map((m) => ({ role: m.role, content: m.content })),
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.message ?? error), events }));
  process.exit(1);
}
