// The test app: what a front-end developer writes, typed against the package's declarations
// (`tsc --noEmit` checks it), bundled by esbuild from the packed tarball.
import { createClient, mount, type Answer, type ChatHandle } from "confab-widget";

const meta = (name: string): string =>
  document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? "";
const relay = meta("confab-relay");
const site = meta("confab-site");

const events: [string, string | undefined][] = [];
const chat: ChatHandle = mount(document.getElementById("help")!, { relay, site, mode: "inline" });
chat.on("message", (text: string) => events.push(["message", text]));
chat.on("message.delta", (piece: string) => events.push(["message.delta", piece]));
chat.on("error", (said: string) => events.push(["error", said]));

// What the tests drive: the package itself, the chat above and what it told the page.
const client = createClient({ relay, site });
const ask = async (question: string, signal?: AbortSignal): Promise<Answer> =>
  client.chat([{ role: "user", content: question }], { signal });

declare global {
  interface Window {
    app: {
      chat: ChatHandle;
      events: typeof events;
      mount: typeof mount;
      createClient: typeof createClient;
      ask: typeof ask;
      relay: string;
      site: string;
    };
  }
}
window.app = { chat, events, mount, createClient, ask, relay, site };
