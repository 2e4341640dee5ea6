// Resumes a subscription with the `eventsource` npm package (a WHATWG EventSource for Node)
// and prints, one JSON line each, every `message` event and every `mercure` signal it sees,
// until it has seen the number of messages given; then exits. Driven by
// tests/it/node_clients.rs: `node gap.mjs URL MESSAGES`.
import { EventSource } from "eventsource";

const [url, wanted] = [process.argv[2], Number(process.argv[3])];
const source = new EventSource(url);
let messages = 0;
const timer = setTimeout(() => {
  console.log(JSON.stringify({ kind: "timeout", messages }));
  process.exit(2);
}, 15000);
source.addEventListener("mercure", (event) => {
  console.log(JSON.stringify({ kind: "signal", data: JSON.parse(event.data), lastEventId: event.lastEventId }));
});
source.onmessage = (event) => {
  console.log(JSON.stringify({ kind: "message", id: event.lastEventId, data: event.data }));
  messages += 1;
  if (messages >= wanted) {
    clearTimeout(timer);
    source.close();
    process.exit(0);
  }
};
source.onerror = (error) => {
  console.log(JSON.stringify({ kind: "error", message: String(error.message ?? error) }));
};
