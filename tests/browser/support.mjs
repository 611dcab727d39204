// What the browser test files share: a free port, and waiting for something to happen.

import { createServer } from "node:net";

/** A TCP port free on 127.0.0.1 now. */
export function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** Waits until `check()` holds (errors count as not yet), or fails after `ms` with `what`
 * and `context()` (e.g. the end of the server's log). */
export async function until(what, check, context = () => "", ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`${what} did not happen within ${ms} ms\n${context()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
