// Edits made without a network, kept in IndexedDB until the hub has answered them.
//
// 1. An edit is stored with its own event id (crypto.randomUUID), the base version the person saw,
//    who made it and as which role, before anything is sent: a reload or a closed tab loses nothing.
// 2. `upload()` sends the logged-in person's stored edits, oldest first, in one POST /api/v1/offline
//    (another person's edits on a shared device wait for that person). An edit leaves the queue only
//    once the hub answered it (applied, merged, parked, refused, or duplicate: a retried upload whose
//    first answer was lost is answered DUPLICATE, never applied twice); PENDING (no answer in time)
//    stays queued. Its answer is kept in `outcomes` for the person to see.
// 3. Only one upload runs at a time; it goes on while edits saved meanwhile wait.

const DB = "orderhub";
const QUEUE = "queue";
const OUTCOMES = "outcomes";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore(QUEUE, { keyPath: "seq", autoIncrement: true });
      db.createObjectStore(OUTCOMES, { keyPath: "event_id" });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function tx(store, mode, work) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const result = work(t.objectStore(store));
    t.oncomplete = () => resolve(result && "result" in result ? result.result : result);
    t.onerror = () => reject(t.error);
  });
}

/** Store one edit (rule 1); returns it with its event id. */
export async function keep(user, role, order, baseVersion, changes) {
  const edit = {
    event_id: `web-${crypto.randomUUID()}`, user, role, order, base_version: baseVersion, changes,
    occurred_at: new Date().toISOString(),
  };
  await tx(QUEUE, "readwrite", (store) => store.add(edit));
  return edit;
}

/** Every edit of ``user`` still waiting, oldest first. */
export async function waiting(user) {
  const all = await tx(QUEUE, "readonly", (store) => store.getAll());
  return all.filter((edit) => edit.user === user);
}

/** The hub's answers to uploaded edits, by event id. */
export async function outcomes() {
  const all = await tx(OUTCOMES, "readonly", (store) => store.getAll());
  return Object.fromEntries(all.map((o) => [o.event_id, o]));
}

let running = null;

/** Rule 2-3: send what ``user`` has waiting; resolves to the answers received (empty when nothing waited). */
export function upload(user, post) {
  if (!running) {
    running = sendAll(user, post).finally(() => { running = null; });
  }
  return running;
}

async function sendAll(user, post) {
  const answers = [];
  for (let round = 0; round < 10; round += 1) { // edits saved during an upload go in the next round
    const edits = await waiting(user);
    if (!edits.length) break;
    const sent = await send(edits, post);
    answers.push(...sent);
    if (sent.every((r) => r.outcome === "PENDING")) break; // the hub is slow: try again later
  }
  return answers;
}

async function send(edits, post) {
  const body = { edits: edits.map(({ seq, user, ...edit }) => edit) };
  const answer = await post("/api/v1/offline", body); // throws while offline: everything stays queued
  const results = answer.results;
  await tx(OUTCOMES, "readwrite", (store) => {
    results.forEach((r, i) => store.put({ ...r, user: edits[i].user, order: edits[i].order, changes: edits[i].changes }));
  });
  await tx(QUEUE, "readwrite", (store) => {
    edits.forEach((e, i) => { if (results[i].outcome !== "PENDING") store.delete(e.seq); });
  });
  return results;
}

/** The answers to ``user``'s uploaded edits, by event id. */
export async function outcomesOf(user) {
  return Object.fromEntries(Object.entries(await outcomes()).filter(([, o]) => o.user === user));
}
